//! What an imaging order asks for: modality, body region and contrast.
//!
//! EHRs code imaging orders with LOINC/RSNA Radiology Playbook codes, CPT or local codes. The
//! playbook's display names follow a fixed grammar ("CT Chest W contrast IV", "XR Chest 2
//! Views", "MR Brain WO and W contrast IV"), so the modality, region and contrast are read from
//! that grammar first; a site catalog (`cds-hooks/procedures.json` plus `[[procedures]]` in the
//! configuration) overrides it for any code, and supplies non-contrast alternatives.

use std::collections::HashMap;

use radsight_fhir::{Coding, Concept, ServiceRequest};
use serde::{Deserialize, Serialize};

/// SNOMED CT 363679005 |Imaging (procedure)|, the usual `ServiceRequest.category` for imaging.
pub const SNOMED_IMAGING: (&str, &str) = ("http://snomed.info/sct", "363679005");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Contrast {
    None,
    Iodinated,
    Gadolinium,
    /// Contrast is given but the agent family is not known.
    Unspecified,
}

impl Contrast {
    pub fn is_given(self) -> bool {
        self != Contrast::None
    }
}

/// A catalog entry: a code and what it means. Unset fields fall back to the display grammar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub system: String,
    pub code: String,
    #[serde(default)]
    pub display: Option<String>,
    #[serde(default)]
    pub modality: Option<String>,
    #[serde(default)]
    pub body_region: Option<String>,
    #[serde(default)]
    pub contrast: Option<Contrast>,
    /// The same examination without contrast, offered when contrast is a risk.
    #[serde(default)]
    pub non_contrast_alternative: Option<CodeRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CodeRef {
    pub system: String,
    pub code: String,
    pub display: String,
}

/// An imaging order, understood.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagingProcedure {
    /// A DICOM modality code (CT, MR, US, NM, PT, MG, XA, RF) or XR for projection radiography;
    /// `None` when the order is imaging by category but the modality cannot be read.
    pub modality: Option<String>,
    /// Lower-case body region words, e.g. `["chest"]`, `["abdomen", "pelvis"]`.
    pub body_region: Vec<String>,
    pub contrast: Contrast,
    pub non_contrast_alternative: Option<CodeRef>,
}

const MODALITIES: &[&str] = &["XR", "CT", "MR", "US", "NM", "PT", "MG", "XA", "RF", "DXA", "DX", "CR"];
/// Words that end the region part of a playbook display name.
const REGION_STOPS: &[&str] = &[
    "w",
    "wo",
    "views",
    "view",
    "single",
    "pa",
    "ap",
    "portable",
    "limited",
    "screening",
    "diagnostic",
    "guidance",
    "for",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
];

impl ImagingProcedure {
    /// True for modalities that use ionising radiation.
    pub fn is_ionising(&self) -> bool {
        matches!(self.modality.as_deref(), Some("XR" | "CT" | "NM" | "PT" | "MG" | "XA" | "RF" | "DXA" | "DX" | "CR"))
    }
}

/// Groups DICOM modality codes into families, so that a prior DX study is relevant to a new XR order.
pub fn modality_family(modality: &str) -> &str {
    match modality {
        "XR" | "DX" | "CR" | "RG" => "radiography",
        "NM" | "PT" => "nuclear",
        other => other,
    }
}

/// Body region words of a free-text region or body-site label.
pub fn region_words(label: &str) -> Vec<String> {
    label
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| !w.is_empty() && w != "and" && w != "of" && w != "the")
        .collect()
}

pub fn regions_overlap(a: &[String], b: &[String]) -> bool {
    a.iter().any(|w| b.contains(w))
}

pub struct ProcedureCatalog {
    entries: HashMap<(String, String), CatalogEntry>,
}

impl ProcedureCatalog {
    /// The shipped catalog, then the site's entries (which win).
    pub fn load(site_entries: &[CatalogEntry]) -> Result<ProcedureCatalog, serde_json::Error> {
        let shipped: Vec<CatalogEntry> = serde_json::from_str(include_str!("../../cds-hooks/procedures.json"))?;
        let entries = shipped.into_iter().chain(site_entries.iter().cloned()).map(|e| ((e.system.clone(), e.code.clone()), e)).collect();
        Ok(ProcedureCatalog { entries })
    }

    fn lookup(&self, concept: &Concept) -> Option<&CatalogEntry> {
        concept.codings.iter().find_map(|c| {
            let key = (c.system.clone()?, c.code.clone()?);
            self.entries.get(&key)
        })
    }

    /// Reads an order. Returns `None` for orders that are not imaging (labs, referrals, ...).
    pub fn classify(&self, order: &ServiceRequest) -> Option<ImagingProcedure> {
        let code = order.code.clone().unwrap_or_default();
        let entry = self.lookup(&code);
        let parsed = code.labels().chain(entry.and_then(|e| e.display.as_deref())).find_map(parse_playbook_name);
        let imaging_category = order.category.iter().any(|c| c.has(SNOMED_IMAGING.0, SNOMED_IMAGING.1));
        if entry.is_none() && parsed.is_none() && !imaging_category {
            return None;
        }
        let modality = entry.and_then(|e| e.modality.clone()).or_else(|| parsed.as_ref().map(|p| p.modality.clone()));
        let mut body_region = entry
            .and_then(|e| e.body_region.as_deref())
            .map(region_words)
            .or_else(|| parsed.as_ref().map(|p| p.region.clone()))
            .unwrap_or_default();
        for site in &order.body_site {
            for label in site.labels() {
                body_region.extend(region_words(label));
            }
        }
        body_region.sort();
        body_region.dedup();
        let contrast = entry.and_then(|e| e.contrast).or_else(|| parsed.as_ref().map(|p| p.contrast)).unwrap_or(Contrast::None);
        Some(ImagingProcedure {
            modality,
            body_region,
            contrast,
            non_contrast_alternative: entry.and_then(|e| e.non_contrast_alternative.clone()),
        })
    }
}

#[derive(Debug, PartialEq)]
struct PlaybookName {
    modality: String,
    region: Vec<String>,
    contrast: Contrast,
}

/// Parses a LOINC/RSNA playbook long common name, e.g. "CT Abdomen and Pelvis W contrast IV".
fn parse_playbook_name(name: &str) -> Option<PlaybookName> {
    let words: Vec<&str> = name.split_whitespace().collect();
    let first = words.first()?.to_ascii_uppercase();
    let modality = MODALITIES.iter().find(|m| **m == first)?;
    let modality = match *modality {
        "DX" | "CR" => "XR",
        m => m,
    };
    let rest = &words[1..];
    let stop = rest.iter().position(|w| REGION_STOPS.contains(&w.to_ascii_lowercase().as_str())).unwrap_or(rest.len());
    let region = region_words(&rest[..stop].join(" "));
    let lower = name.to_ascii_lowercase();
    let with_contrast = lower.contains(" w contrast") || lower.contains("with contrast") || lower.contains("w/ contrast");
    // Oral or rectal contrast alone ("W contrast PO") carries no IV allergy or renal risk.
    let enteral_only = with_contrast && !lower.contains(" iv") && (lower.contains(" po") || lower.contains(" rectal"));
    let contrast = if !with_contrast || enteral_only {
        Contrast::None
    } else if lower.contains("gadolinium") || modality == "MR" {
        Contrast::Gadolinium
    } else if matches!(modality, "CT" | "XA" | "RF" | "XR") {
        Contrast::Iodinated
    } else {
        Contrast::Unspecified
    };
    Some(PlaybookName { modality: modality.to_owned(), region, contrast })
}

/// A coding in the form `system|code`, as used in configuration lists.
pub fn matches_token(c: &Coding, token: &str) -> bool {
    match token.split_once('|') {
        Some((system, code)) => c.is(system, code),
        None => c.code.as_deref() == Some(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, modality: &str, region: &[&str], contrast: Contrast) {
        let p = parse_playbook_name(name).unwrap_or_else(|| panic!("{name} not parsed"));
        assert_eq!(p.modality, modality, "{name}");
        assert_eq!(p.region, region.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{name}");
        assert_eq!(p.contrast, contrast, "{name}");
    }

    #[test]
    fn playbook_names_give_modality_region_and_contrast() {
        check("CT Chest W contrast IV", "CT", &["chest"], Contrast::Iodinated);
        check("CT Chest WO contrast", "CT", &["chest"], Contrast::None);
        check("MR Brain WO and W contrast IV", "MR", &["brain"], Contrast::Gadolinium);
        check("XR Chest 2 Views", "XR", &["chest"], Contrast::None);
        check("CT Abdomen and Pelvis W contrast IV", "CT", &["abdomen", "pelvis"], Contrast::Iodinated);
        check("CT Abdomen W contrast PO", "CT", &["abdomen"], Contrast::None);
        check("US Abdomen", "US", &["abdomen"], Contrast::None);
        assert!(parse_playbook_name("Hemoglobin A1c").is_none());
        assert!(parse_playbook_name("").is_none());
    }

    #[test]
    fn ionising_modalities_are_known() {
        let p = |m: &str| ImagingProcedure {
            modality: Some(m.into()),
            body_region: vec![],
            contrast: Contrast::None,
            non_contrast_alternative: None,
        };
        assert!(p("CT").is_ionising() && p("XR").is_ionising() && p("MG").is_ionising());
        assert!(!p("MR").is_ionising() && !p("US").is_ionising());
    }
}
