//! How people relate to the client: the holder relationships of contract §6, and the codes a
//! holder may give a network member, from the Dutch RoleCodeNL (COD472) and HL7's v3 RoleCode
//! family codes, as the zib ContactPerson uses them.

/// RoleCodeNL (`urn:oid:2.16.840.1.113883.2.4.3.11.22.472`): code and Dutch display.
pub const ROLE_CODE_NL: &str = "urn:oid:2.16.840.1.113883.2.4.3.11.22.472";
const ROLE_CODES_NL: &[(&str, &str)] = &[
    ("01", "Eerste relatie/contactpersoon"),
    ("02", "Tweede relatie/contactpersoon"),
    ("03", "Curator (juridisch)"),
    ("04", "Financieel (gemachtigd)"),
    ("05", "Financieel (toetsing)"),
    ("06", "Leefeenheid"),
    ("07", "Hulpverlener"),
    ("09", "Anders"),
    ("11", "Voogd"),
    ("14", "Bewindvoerder"),
    ("15", "Mentor"),
    ("19", "Buur"),
    ("20", "Vriend(in)/kennis"),
    ("21", "Cliëntondersteuner"),
    ("23", "Contactpersoon"),
    ("24", "Wettelijke vertegenwoordiger"),
];

/// HL7 v3 RoleCode (family relations of the zib RelatieCodelijst).
pub const V3_ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
const V3_FAMILY: &[(&str, &str)] = &[
    ("ADOPTF", "Adoptive father"),
    ("ADOPTM", "Adoptive mother"),
    ("AUNT", "Aunt"),
    ("BRO", "Brother"),
    ("BROINLAW", "Brother-in-law"),
    ("COUSN", "Cousin"),
    ("DAUC", "Daughter"),
    ("DAUINLAW", "Daughter in-law"),
    ("DOMPART", "Domestic partner"),
    ("FTH", "Father"),
    ("FTHINLAW", "Father-in-law"),
    ("DAUFOST", "Foster daughter"),
    ("FTHFOST", "Foster father"),
    ("MTHFOST", "Foster mother"),
    ("SONFOST", "Foster son"),
    ("GRNDDAU", "Granddaughter"),
    ("GRFTH", "Grandfather"),
    ("GRMTH", "Grandmother"),
    ("GRNDSON", "Grandson"),
    ("GGRFTH", "Great grandfather"),
    ("GGRMTH", "Great grandmother"),
    ("HUSB", "Husband"),
    ("MTH", "Mother"),
    ("MTHINLAW", "Mother-in-law"),
    ("NEPHEW", "Nephew"),
    ("NIECE", "Niece"),
    ("SIS", "Sister"),
    ("SISINLAW", "Sister-in-law"),
    ("SONC", "Son"),
    ("SONINLAW", "Son in-law"),
    ("STPFTH", "Stepfather"),
    ("STPMTH", "Stepmother"),
    ("UNCLE", "Uncle"),
    ("WIFE", "Wife"),
    ("ONESELF", "Self"),
];

/// The coding of a relationship code: `(system, code, display)`.
pub fn coding(code: &str) -> Option<(&'static str, &'static str, &'static str)> {
    ROLE_CODES_NL
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(c, d)| (ROLE_CODE_NL, *c, *d))
        .or_else(|| {
            V3_FAMILY
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(c, d)| (V3_ROLE_CODE, *c, *d))
        })
}

/// Every code a network member's relationship may have, for messages.
pub fn codes() -> String {
    let nl: Vec<&str> = ROLE_CODES_NL.iter().map(|(c, _)| *c).collect();
    let v3: Vec<&str> = V3_FAMILY.iter().map(|(c, _)| *c).collect();
    format!(
        "RoleCodeNL {} or v3 RoleCode {}",
        nl.join(", "),
        v3.join(", ")
    )
}

/// The holder relationships of an activation code (contract §6).
pub const HOLDER: &[&str] = &["self", "curator", "mentor", "notarial", "first-contact"];

/// How a holder relationship ranks (§6): a legal representative takes over from anyone; the
/// client and the representatives the client designates give way to a legal representative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderKind {
    /// The client.
    Client,
    /// Court-appointed: curator, mentor.
    Legal,
    /// Designated by the client: first contact person, written (notarial) authorisation.
    Designated,
}

pub fn holder_kind(relationship: &str) -> Option<HolderKind> {
    match relationship {
        "self" => Some(HolderKind::Client),
        "curator" | "mentor" => Some(HolderKind::Legal),
        "notarial" | "first-contact" => Some(HolderKind::Designated),
        _ => None,
    }
}

/// The code a holder relationship is shown with (RelatedPerson, Consent).
pub fn holder_code(relationship: &str) -> &'static str {
    match relationship {
        "curator" => "03",
        "mentor" => "15",
        "first-contact" => "01",
        "notarial" => "24",
        _ => "ONESELF",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_resolve_to_their_system() {
        assert_eq!(coding("01").map(|c| c.0), Some(ROLE_CODE_NL));
        assert_eq!(coding("DAUC").map(|c| c.2), Some("Daughter"));
        assert_eq!(coding("neighbour"), None);
        for r in HOLDER {
            assert!(coding(holder_code(r)).is_some(), "{r}");
            assert!(holder_kind(r).is_some());
        }
    }
}
