//! FHIR search over the store: which parameters exist, how a query string becomes criteria,
//! and how criteria and an access decision become one SQL statement.
//!
//! The parameters come from the R4 definitions (`fhir::definitions`); this module says which
//! of them the adapter indexes. Ingest writes exactly these values; search reads them; the
//! CapabilityStatement lists them. Keep the three in step by changing only the lists here.

pub mod dates;
pub mod params;
pub mod sql;

use crate::fhir::definitions::{self, ParamType, SearchParamDef};

/// Token parameters whose values are indexed for every resource type that defines them.
pub const TOKEN_PARAMS: &[&str] = &["category", "code", "identifier", "status", "type"];
/// Date parameters whose values are indexed.
pub const DATE_PARAMS: &[&str] = &["date"];
/// Reference parameters answered by the client a resource belongs to.
pub const PATIENT_PARAMS: &[&str] = &["patient", "subject"];

/// A search parameter the adapter supports for a resource type.
#[derive(Debug, Clone, Copy)]
pub struct Supported {
    pub name: &'static str,
    pub ty: ParamType,
    pub def: Option<&'static SearchParamDef>,
}

/// The parameters a type can be searched by, besides `_id` and `_lastUpdated`.
pub fn supported_params(resource_type: &str) -> Vec<Supported> {
    let mut out = Vec::new();
    for def in definitions::search_params(resource_type) {
        let indexed = match def.ty {
            ParamType::Token => TOKEN_PARAMS.contains(&def.name),
            ParamType::Date => DATE_PARAMS.contains(&def.name),
            ParamType::Reference => {
                PATIENT_PARAMS.contains(&def.name) && def.targets.contains(&"Patient")
            }
            _ => false,
        };
        if indexed {
            out.push(Supported {
                name: def.name,
                ty: def.ty,
                def: Some(def),
            });
        }
    }
    out
}

/// The definition of a supported parameter, if `name` is one for this type.
pub fn supported_param(resource_type: &str, name: &str) -> Option<Supported> {
    supported_params(resource_type)
        .into_iter()
        .find(|s| s.name == name)
}

/// Whether a type is searchable by `patient`/`subject` (i.e. has such a parameter).
pub fn has_patient_param(resource_type: &str) -> bool {
    supported_params(resource_type)
        .iter()
        .any(|s| s.ty == ParamType::Reference)
}
