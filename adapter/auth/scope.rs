//! SMART v2 `system/` scopes: what a client may do with which resource types.
//!
//! A client's config names what it may ever have (`[[clients]] scope`); a token request may
//! ask for less, and gets what both allow; every request is checked against what both its
//! token and the client's config allow now (a narrowing of the config acts on old tokens at
//! once). A scope only ever limits: the access decision (consent, delay) still has the last
//! word on what a portal user sees.

use crate::error::{ApiError, Reason};

/// One interaction of SMART v2 (`c r u d s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    const ALL: [Interaction; 5] = [
        Interaction::Create,
        Interaction::Read,
        Interaction::Update,
        Interaction::Delete,
        Interaction::Search,
    ];

    fn bit(self) -> u8 {
        match self {
            Interaction::Create => 1,
            Interaction::Read => 2,
            Interaction::Update => 4,
            Interaction::Delete => 8,
            Interaction::Search => 16,
        }
    }

    fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }
}

/// One `system/{type}.{permissions}` scope; `ty` `None` is `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    ty: Option<String>,
    bits: u8,
}

/// A set of scopes, as granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Parses space-separated scopes: SMART v2 (`system/Observation.rs`, `system/*.cruds`) or
    /// v1 (`system/Observation.read`, `.write`, `.*`). Anything else is refused with what is
    /// wrong: other contexts (`user/`, `patient/`: these are backend services), scopes with
    /// search parameters, types that are not R4 resource types, letters out of order.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut scopes = Vec::new();
        for word in text.split_ascii_whitespace() {
            scopes.push(parse_one(word)?);
        }
        if scopes.is_empty() {
            return Err("no scope given".into());
        }
        Ok(Scopes(scopes))
    }

    /// Whether these scopes allow `interaction` on resources of `ty`.
    pub fn allows(&self, ty: &str, interaction: Interaction) -> bool {
        self.0
            .iter()
            .any(|s| s.bits & interaction.bit() != 0 && s.ty.as_deref().is_none_or(|t| t == ty))
    }

    /// Whether these scopes allow `interaction` on every type (a `*` scope).
    pub fn allows_every_type(&self, interaction: Interaction) -> bool {
        self.0
            .iter()
            .any(|s| s.ty.is_none() && s.bits & interaction.bit() != 0)
    }

    /// What both allow: for each pair, the narrower type and the common interactions.
    pub fn narrow(&self, other: &Scopes) -> Scopes {
        let mut out: Vec<Scope> = Vec::new();
        for a in &self.0 {
            for b in &other.0 {
                let ty = match (&a.ty, &b.ty) {
                    (None, t) | (t, None) => t.clone(),
                    (Some(x), Some(y)) if x == y => Some(x.clone()),
                    _ => continue,
                };
                let bits = a.bits & b.bits;
                if bits == 0 {
                    continue;
                }
                match out.iter_mut().find(|s| s.ty == ty) {
                    Some(s) => s.bits |= bits,
                    None => out.push(Scope { ty, bits }),
                }
            }
        }
        Scopes(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The refusal of a request these scopes do not cover: 403 (RFC 6750
    /// `insufficient_scope`), saying what scope it needs.
    pub fn require(&self, ty: &str, interaction: Interaction) -> Result<(), ApiError> {
        if self.allows(ty, interaction) {
            return Ok(());
        }
        Err(insufficient(format!(
            "the token's scope does not allow this: it needs system/{ty}.{}",
            interaction.letter()
        )))
    }

    /// [`Scopes::require`] for a call that reaches every type (`_history`).
    pub fn require_every_type(&self, interaction: Interaction) -> Result<(), ApiError> {
        if self.allows_every_type(interaction) {
            return Ok(());
        }
        Err(insufficient(format!(
            "the token's scope does not allow this: it spans every resource type and needs system/*.{}",
            interaction.letter()
        )))
    }
}

fn insufficient(message: String) -> ApiError {
    ApiError::forbidden(Reason::InvalidToken, message)
        .with_challenge("Bearer error=\"insufficient_scope\"")
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "system/{}.", s.ty.as_deref().unwrap_or("*"))?;
            for interaction in Interaction::ALL {
                if s.bits & interaction.bit() != 0 {
                    write!(f, "{}", interaction.letter())?;
                }
            }
        }
        Ok(())
    }
}

fn parse_one(word: &str) -> Result<Scope, String> {
    let shown: String = word.chars().take(80).collect();
    if word.contains('?') {
        return Err(format!(
            "`{shown}`: scopes with search parameters are not supported"
        ));
    }
    let Some(rest) = word.strip_prefix("system/") else {
        return Err(format!(
            "`{shown}` is not a system/ scope (SMART Backend Services: system/Type.rs, system/*.cud, ...)"
        ));
    };
    let (ty, permissions) = rest
        .split_once('.')
        .ok_or_else(|| format!("`{shown}`: a scope is system/Type.permissions"))?;
    let ty = match ty {
        "*" => None,
        t if crate::fhir::definitions::is_resource_type(t) => Some(t.to_string()),
        _ => return Err(format!("`{shown}`: not an R4 resource type")),
    };
    let bits = match permissions {
        // SMART v1.
        "read" => Interaction::Read.bit() | Interaction::Search.bit(),
        "write" => {
            Interaction::Create.bit() | Interaction::Update.bit() | Interaction::Delete.bit()
        }
        "*" => 31,
        letters => v2_bits(letters).ok_or_else(|| {
            format!("`{shown}`: permissions are some of c r u d s, in that order")
        })?,
    };
    Ok(Scope { ty, bits })
}

/// `cruds` letters, each at most once and in that order.
fn v2_bits(letters: &str) -> Option<u8> {
    let mut bits = 0u8;
    let mut next = 0usize;
    for ch in letters.chars() {
        let at = Interaction::ALL[next..]
            .iter()
            .position(|i| i.letter() == ch)?;
        bits |= Interaction::ALL[next + at].bit();
        next += at + 1;
    }
    (bits != 0).then_some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(text: &str) -> Scopes {
        Scopes::parse(text).unwrap()
    }

    #[test]
    fn v2_and_v1_scopes_parse_to_the_same_rights() {
        assert_eq!(
            scopes("system/Observation.read"),
            scopes("system/Observation.rs")
        );
        assert_eq!(scopes("system/*.write"), scopes("system/*.cud"));
        assert_eq!(scopes("system/*.*"), scopes("system/*.cruds"));
        assert_eq!(scopes("system/*.cruds").to_string(), "system/*.cruds");
        let s = scopes("system/Observation.rs  system/Patient.r");
        assert!(s.allows("Observation", Interaction::Search));
        assert!(s.allows("Patient", Interaction::Read));
        assert!(!s.allows("Patient", Interaction::Search));
        assert!(!s.allows("Condition", Interaction::Read));
        assert!(!s.allows_every_type(Interaction::Read));
        assert!(scopes("system/*.rs").allows_every_type(Interaction::Read));
    }

    #[test]
    fn what_is_not_a_backend_scope_is_refused_with_the_reason() {
        for (text, says) in [
            ("user/*.rs", "not a system/ scope"),
            ("patient/Observation.rs", "not a system/ scope"),
            ("openid", "not a system/ scope"),
            (
                "system/Observation.rs?category=vital-signs",
                "search parameters",
            ),
            ("system/Observatoin.rs", "not an R4 resource type"),
            ("system/Observation.sr", "in that order"),
            ("system/Observation.rr", "in that order"),
            ("system/Observation.", "in that order"),
            ("system/Observation.x", "in that order"),
            ("system/Observation", "system/Type.permissions"),
            ("", "no scope"),
            ("   ", "no scope"),
        ] {
            let err = Scopes::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn narrowing_keeps_what_both_allow() {
        let config = scopes("system/Observation.rs system/Patient.r");
        let asked = scopes("system/*.rs");
        assert_eq!(
            asked.narrow(&config).to_string(),
            "system/Observation.rs system/Patient.r"
        );
        assert_eq!(
            scopes("system/*.cruds")
                .narrow(&scopes("system/*.rs"))
                .to_string(),
            "system/*.rs"
        );
        assert!(scopes("system/Condition.rs").narrow(&config).is_empty());
        assert!(scopes("system/*.cud").narrow(&config).is_empty());
        // Asking for less than allowed gets just that.
        assert_eq!(
            scopes("system/Observation.s").narrow(&config).to_string(),
            "system/Observation.s"
        );
    }

    #[test]
    fn a_refusal_is_403_and_names_the_scope_needed() {
        let s = scopes("system/Observation.rs");
        assert!(s.require("Observation", Interaction::Read).is_ok());
        let e = s.require("Condition", Interaction::Search).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::FORBIDDEN);
        assert!(e.message.contains("system/Condition.s"), "{}", e.message);
        assert!(s.require_every_type(Interaction::Read).is_err());
    }
}
