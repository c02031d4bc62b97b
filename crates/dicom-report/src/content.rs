//! The SR content tree: content items as values, and their encoding as Content Sequence items
//! (PS3.3 §C.17.3, the SR Document Content Module, and Table C.17-6 Content Item Macro).
//!
//! Templates are built as trees of `ContentItem` (sr.rs, receipt.rs) and encoded once, so the
//! document structure reads like the template tables it follows.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::model::Code;
use crate::values::format_ds;

/// Relationship Type (0040,A010) from a content item to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relationship {
    Contains,
    HasObsContext,
    HasConceptMod,
}

impl Relationship {
    fn as_str(self) -> &'static str {
        match self {
            Relationship::Contains => "CONTAINS",
            Relationship::HasObsContext => "HAS OBS CONTEXT",
            Relationship::HasConceptMod => "HAS CONCEPT MOD",
        }
    }
}

/// The value of a content item, by Value Type (0040,A040).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ItemValue {
    /// A CONTAINER; `template` is its TID in DCMR, written as Content Template Sequence.
    Container {
        template: Option<&'static str>,
    },
    Text(String),
    Code(Code),
    /// A NUM with one Measured Value Sequence item.
    Num {
        value: f64,
        unit: Code,
    },
    UidRef(String),
    /// An IMAGE reference: (SOP Class UID, SOP Instance UID).
    Image {
        sop_class_uid: String,
        sop_instance_uid: String,
    },
}

/// One SR content item and its children.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContentItem {
    pub relationship: Relationship,
    pub name: Code,
    pub value: ItemValue,
    pub children: Vec<ContentItem>,
}

impl ContentItem {
    pub fn container(relationship: Relationship, name: Code, children: Vec<ContentItem>) -> Self {
        Self { relationship, name, value: ItemValue::Container { template: None }, children }
    }

    pub fn text(relationship: Relationship, name: Code, text: &str) -> Self {
        Self { relationship, name, value: ItemValue::Text(text.to_owned()), children: Vec::new() }
    }

    pub fn code(relationship: Relationship, name: Code, value: Code) -> Self {
        Self { relationship, name, value: ItemValue::Code(value), children: Vec::new() }
    }

    pub fn num(relationship: Relationship, name: Code, value: f64, unit: Code) -> Self {
        Self { relationship, name, value: ItemValue::Num { value, unit }, children: Vec::new() }
    }

    pub fn uid_ref(relationship: Relationship, name: Code, uid: &str) -> Self {
        Self { relationship, name, value: ItemValue::UidRef(uid.to_owned()), children: Vec::new() }
    }

    pub fn image(relationship: Relationship, name: Code, sop_class_uid: &str, sop_instance_uid: &str) -> Self {
        let value = ItemValue::Image { sop_class_uid: sop_class_uid.to_owned(), sop_instance_uid: sop_instance_uid.to_owned() };
        Self { relationship, name, value, children: Vec::new() }
    }

    /// Marks a CONTAINER as the root of a DCMR template.
    pub fn with_template(mut self, tid: &'static str) -> Self {
        if let ItemValue::Container { template } = &mut self.value {
            *template = Some(tid);
        }
        self
    }

    /// This item as a Content Sequence item.
    fn to_item(&self) -> InMemDicomObject {
        let mut item = InMemDicomObject::new_empty();
        put_str(&mut item, tags::RELATIONSHIP_TYPE, VR::CS, self.relationship.as_str());
        self.write_body(&mut item);
        item
    }

    /// Writes this item as the document root into the data set itself: the root has no
    /// Relationship Type (PS3.3 §C.17.3.2.1) and is always a CONTAINER.
    pub fn write_root(&self, obj: &mut InMemDicomObject) {
        debug_assert!(matches!(self.value, ItemValue::Container { .. }));
        self.write_body(obj);
    }

    fn write_body(&self, obj: &mut InMemDicomObject) {
        let value_type = match &self.value {
            ItemValue::Container { .. } => "CONTAINER",
            ItemValue::Text(_) => "TEXT",
            ItemValue::Code(_) => "CODE",
            ItemValue::Num { .. } => "NUM",
            ItemValue::UidRef(_) => "UIDREF",
            ItemValue::Image { .. } => "IMAGE",
        };
        put_str(obj, tags::VALUE_TYPE, VR::CS, value_type);
        put_seq(obj, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_item(&self.name)]);
        match &self.value {
            ItemValue::Container { template } => {
                // Items of a report are separate statements, not one running text.
                put_str(obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
                if let Some(tid) = template {
                    let mut t = InMemDicomObject::new_empty();
                    put_str(&mut t, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
                    put_str(&mut t, tags::TEMPLATE_IDENTIFIER, VR::CS, tid);
                    put_seq(obj, tags::CONTENT_TEMPLATE_SEQUENCE, vec![t]);
                }
            }
            ItemValue::Text(text) => put_str(obj, tags::TEXT_VALUE, VR::UT, text),
            ItemValue::Code(code) => put_seq(obj, tags::CONCEPT_CODE_SEQUENCE, vec![code_item(code)]),
            ItemValue::Num { value, unit } => {
                // Numeric Measurement Macro (Table C.18.1-1): the DS for every reader, and the
                // exact binary value too, since a 16-character DS may round it.
                let mut measured = InMemDicomObject::new_empty();
                put_seq(&mut measured, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![code_item(unit)]);
                put_str(&mut measured, tags::NUMERIC_VALUE, VR::DS, &format_ds(*value));
                measured.put(DataElement::new(tags::FLOATING_POINT_VALUE, VR::FD, PrimitiveValue::from(*value)));
                put_seq(obj, tags::MEASURED_VALUE_SEQUENCE, vec![measured]);
            }
            ItemValue::UidRef(uid) => put_str(obj, tags::UID, VR::UI, uid),
            ItemValue::Image { sop_class_uid, sop_instance_uid } => {
                put_seq(obj, tags::REFERENCED_SOP_SEQUENCE, vec![sop_reference(sop_class_uid, sop_instance_uid)]);
            }
        }
        if !self.children.is_empty() {
            put_seq(obj, tags::CONTENT_SEQUENCE, self.children.iter().map(ContentItem::to_item).collect());
        }
    }
}

/// A Code Sequence item (PS3.3 Table 8.8-1): Code Value as SH, or as Long Code Value (UC) when
/// it is longer than 16 characters (§8.8.1.1).
pub(crate) fn code_item(code: &Code) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    if code.value.chars().count() > 16 {
        put_str(&mut item, tags::LONG_CODE_VALUE, VR::UC, &code.value);
    } else {
        put_str(&mut item, tags::CODE_VALUE, VR::SH, &code.value);
    }
    put_str(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, &code.scheme);
    put_str(&mut item, tags::CODE_MEANING, VR::LO, &code.meaning);
    item
}

/// An SOP Instance Reference Macro item (PS3.3 Table 10-11).
pub(crate) fn sop_reference(sop_class_uid: &str, sop_instance_uid: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put_str(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, sop_class_uid);
    put_str(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop_instance_uid);
    item
}

pub(crate) fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// A Type 2 attribute: present, and empty when there is no value.
pub(crate) fn put_opt_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: Option<&str>) {
    match value {
        Some(v) => put_str(obj, tag, vr, v),
        None => {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        }
    }
}

pub(crate) fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}
