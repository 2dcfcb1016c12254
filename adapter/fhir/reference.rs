//! Ids and references as FHIR R4 writes them: what a valid id is, `Type/id` out of a literal
//! reference or a request URL, and which types live in the patient compartment. Used by every
//! layer that reads ids (ingest, search, serve, release, admin); it knows FHIR, nothing of the
//! adapter.

use super::definitions;

/// A FHIR id: 1 to 64 of `A-Z a-z 0-9 - .`.
pub fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `Type/id` out of a literal reference: relative (`Patient/1`, `Patient/1/_history/2`) or
/// absolute (`https://x/fhir/Patient/1`). Contained (`#x`), `urn:` and conditional references
/// give `None`.
pub fn parse_reference(reference: &str) -> Option<(&str, &str)> {
    if reference.starts_with('#') || reference.starts_with("urn:") || reference.contains('?') {
        return None;
    }
    let without_history = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let mut parts = without_history.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    (definitions::is_resource_type(ty) && is_fhir_id(id)).then_some((ty, id))
}

/// `Type/id` with a known type and a valid id (a request's URL, `/admin` bodies).
pub fn parse_type_id(url: &str) -> Option<(String, String)> {
    let (ty, id) = url.trim_start_matches('/').split_once('/')?;
    (definitions::is_resource_type(ty) && is_fhir_id(id)).then(|| (ty.to_string(), id.to_string()))
}

/// Whether a type lives in the patient compartment (or is Patient itself).
pub fn in_compartment(resource_type: &str) -> bool {
    resource_type == "Patient" || definitions::patient_compartment(resource_type).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_in_every_form() {
        assert_eq!(parse_reference("Patient/1"), Some(("Patient", "1")));
        assert_eq!(
            parse_reference("Patient/1/_history/3"),
            Some(("Patient", "1"))
        );
        assert_eq!(
            parse_reference("https://x.org/fhir/Patient/a-b"),
            Some(("Patient", "a-b"))
        );
        assert_eq!(parse_reference("#contained"), None);
        assert_eq!(parse_reference("urn:uuid:1234"), None);
        assert_eq!(parse_reference("Organization?identifier=x|1"), None);
        assert_eq!(parse_reference("Nope/1"), None);
    }

    #[test]
    fn ids_and_type_ids() {
        assert!(is_fhir_id("a-b.1") && !is_fhir_id("") && !is_fhir_id("a/b"));
        assert!(!is_fhir_id(&"x".repeat(65)));
        assert_eq!(
            parse_type_id("/Observation/o1"),
            Some(("Observation".into(), "o1".into()))
        );
        assert_eq!(parse_type_id("Nope/1"), None);
        assert!(in_compartment("Patient") && in_compartment("Observation"));
        assert!(!in_compartment("Practitioner") && !in_compartment("Task"));
    }
}
