//! SMART scopes for resources (`system/DiagnosticReport.cu`, `patient/*.rs`, v1
//! `system/*.write`): parsing, whether a scope permits an interaction, and whether one scope
//! covers another (how a backend client's requested scopes are cut down to its allowed ones).
//!
//! SMART 2.2 granular scopes with a query (`patient/Observation.rs?category=…`) are not
//! understood here: they parse as nothing, so they grant nothing (refusing is the safe side).

/// Whose data a scope is about (the part before `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Patient,
    User,
    System,
}

/// A FHIR interaction, as the SMART v2 letters name them (`c r u d s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    const ALL: [Interaction; 5] = [Interaction::Create, Interaction::Read, Interaction::Update, Interaction::Delete, Interaction::Search];

    fn bit(self) -> u8 {
        match self {
            Interaction::Create => 1,
            Interaction::Read => 2,
            Interaction::Update => 4,
            Interaction::Delete => 8,
            Interaction::Search => 16,
        }
    }
}

/// One parsed resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    context: Context,
    /// `None` for `*`.
    resource_type: Option<String>,
    /// A set of [`Interaction::bit`]s.
    interactions: u8,
}

impl Scope {
    /// Parses `context/Type.permissions`; anything else (`launch`, `openid`, a granular query,
    /// letters out of the v2 order) is not a resource scope.
    pub(crate) fn parse(s: &str) -> Option<Scope> {
        let (context, rest) = s.split_once('/')?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (resource_type, permissions) = rest.split_once('.')?;
        let resource_type = match resource_type {
            "*" => None,
            t if is_resource_type(t) => Some(t.to_owned()),
            _ => return None,
        };
        Some(Scope { context, resource_type, interactions: parse_permissions(permissions)? })
    }

    /// Whether this scope allows `interaction` on `resource_type` in `context`.
    pub(crate) fn permits(&self, context: Context, resource_type: &str, interaction: Interaction) -> bool {
        self.context == context
            && self.resource_type.as_deref().is_none_or(|t| t == resource_type)
            && self.interactions & interaction.bit() != 0
    }

    /// The interactions of `requested` this scope also allows (none in another context or
    /// for another type).
    fn shared_interactions(&self, requested: &Scope) -> u8 {
        let type_covered = match (&self.resource_type, &requested.resource_type) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        };
        if self.context == requested.context && type_covered { self.interactions & requested.interactions } else { 0 }
    }
}

/// `cruds`-style letters (each at most once, in that order) or the v1 `read`, `write`, `*`.
fn parse_permissions(p: &str) -> Option<u8> {
    let all: u8 = Interaction::ALL.iter().map(|i| i.bit()).sum();
    let read = Interaction::Read.bit() | Interaction::Search.bit();
    match p {
        "*" => return Some(all),
        "read" => return Some(read),
        "write" => return Some(all & !read),
        _ => {}
    }
    let order = "cruds";
    let mut last = None;
    let mut bits = 0;
    for ch in p.chars() {
        let pos = order.find(ch)?;
        if last.is_some_and(|l| pos <= l) {
            return None;
        }
        last = Some(pos);
        bits |= Interaction::ALL[pos].bit();
    }
    (bits != 0).then_some(bits)
}

/// A FHIR resource type name: an upper-case letter, then letters.
pub(crate) fn is_resource_type(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && t.chars().all(|c| c.is_ascii_alphabetic())
}

/// The resource scopes in a space-separated scope string.
pub(crate) fn parse_all(scope: &str) -> Vec<Scope> {
    scope.split_whitespace().filter_map(Scope::parse).collect()
}

/// Whether any scope in `granted` allows `interaction` on `resource_type` in `context`.
pub(crate) fn any_permits(granted: &[Scope], context: Context, resource_type: &str, interaction: Interaction) -> bool {
    granted.iter().any(|s| s.permits(context, resource_type, interaction))
}

/// Whether the allowed scopes together allow everything `requested` does (`system/*.write`
/// and `system/*.rs` together cover `system/Patient.cruds`).
fn covered_together(allowed: &[Scope], requested: &Scope) -> bool {
    let shared = allowed.iter().fold(0, |bits, a| bits | a.shared_interactions(requested));
    shared == requested.interactions
}

/// The requested `system/` scopes (as the client spelled them) that the allowed scopes cover.
pub(crate) fn grant_system_scopes<'a>(requested: &'a str, allowed: &[String]) -> Vec<&'a str> {
    let allowed: Vec<Scope> = allowed.iter().filter_map(|s| Scope::parse(s)).collect();
    requested
        .split_whitespace()
        .filter(|r| Scope::parse(r).is_some_and(|r| r.context == Context::System && covered_together(&allowed, &r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_permits(scope: &str, resource_type: &str, interaction: Interaction, expected: bool) {
        let parsed = Scope::parse(scope).unwrap_or_else(|| panic!("{scope} should parse"));
        assert_eq!(parsed.permits(Context::System, resource_type, interaction), expected, "{scope} {resource_type} {interaction:?}");
    }

    #[test]
    fn v2_and_v1_scopes_permit_what_their_letters_say() {
        check_permits("system/DiagnosticReport.cu", "DiagnosticReport", Interaction::Create, true);
        check_permits("system/DiagnosticReport.cu", "DiagnosticReport", Interaction::Update, true);
        check_permits("system/DiagnosticReport.cu", "DiagnosticReport", Interaction::Read, false);
        check_permits("system/DiagnosticReport.cu", "Observation", Interaction::Create, false);
        check_permits("system/*.c", "Observation", Interaction::Create, true);
        check_permits("system/*.rs", "Observation", Interaction::Search, true);
        check_permits("system/*.write", "Patient", Interaction::Create, true);
        check_permits("system/*.write", "Patient", Interaction::Read, false);
        check_permits("system/Patient.read", "Patient", Interaction::Search, true);
        check_permits("system/*.*", "Anything", Interaction::Delete, true);
    }

    #[test]
    fn malformed_and_granular_scopes_grant_nothing() {
        for s in [
            "launch",
            "openid",
            "system/Patient.sr",
            "system/Patient.cc",
            "system/Patient.",
            "system/patient.r",
            "admin/Patient.r",
            "system/Observation.rs?category=x",
        ] {
            assert_eq!(Scope::parse(s), None, "{s}");
        }
    }

    #[test]
    fn requested_scopes_are_cut_down_to_the_allowed_ones() {
        let allowed = vec!["system/*.write".to_owned(), "system/Patient.rs".to_owned()];
        let granted =
            grant_system_scopes("system/DiagnosticReport.cu system/Observation.r system/Patient.read patient/*.rs launch", &allowed);
        assert_eq!(granted, ["system/DiagnosticReport.cu", "system/Patient.read"]);
        assert_eq!(grant_system_scopes("system/Anything.cruds", &["system/*.*".to_owned()]), ["system/Anything.cruds"]);
        assert!(grant_system_scopes("system/*.c", &["system/Patient.c".to_owned()]).is_empty());
        assert_eq!(grant_system_scopes("system/Patient.cruds", &allowed), ["system/Patient.cruds"], "covered by two scopes together");
        assert!(grant_system_scopes("system/Observation.cruds", &allowed).is_empty(), "Observation.r and .s are not allowed");
    }
}
