//! The access decision (contract §5): a pure function of facts and the moment.
//!
//! Steps 2–6 are decided here per user and per client; step 1 (the token) is `auth`'s and
//! steps 7–8 (sections, release) are applied per resource by [`Decision::may_see`] and, for
//! search, by the SQL that `search::sql` builds from the same decision.

use crate::error::Reason;
use crate::time::IsoDuration;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::store::accounts::Role;

/// The sections a user may see of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionSet {
    All,
    Only(BTreeSet<String>),
}

impl SectionSet {
    pub fn allows(&self, section: &str) -> bool {
        match self {
            SectionSet::All => true,
            SectionSet::Only(set) => set.contains(section),
        }
    }
}

/// The portal user, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFacts {
    pub id: i64,
    pub birth_date: Option<NaiveDate>,
    pub terms_version: Option<String>,
    /// A block is recorded (R7) ...
    pub blocked: bool,
    /// ... until this moment (`None`: until lifted).
    pub blocked_until: Option<DateTime<Utc>>,
}

/// One link between the user and a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    pub id: i64,
    pub patient_id: String,
    pub role: Role,
    /// `None`: every section.
    pub sections: Option<BTreeSet<String>>,
    pub can_post: bool,
    pub ended: bool,
    /// When the link or its grant last changed (for portals that cache).
    pub changed_at: Option<DateTime<Utc>>,
}

/// One EpisodeOfCare of a client, as its newest version says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// EpisodeOfCare.status: planned, waitlist, active, onhold, finished, cancelled, …
    pub status: String,
    pub start: Option<DateTime<Utc>>,
    /// The end of `period` (the end of its last day when only a date is given).
    pub end: Option<DateTime<Utc>>,
    /// When this version arrived: the end of a `finished` episode without a period end.
    pub recorded: DateTime<Utc>,
}

/// What the store knows of a client's care and life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFacts {
    /// R8: all portal access blocked.
    pub blocked: bool,
    pub episodes: Vec<Episode>,
    /// `Patient.deceased[x]`: the moment, or the moment it was learned for `deceasedBoolean`.
    pub deceased_at: Option<DateTime<Utc>>,
}

/// The organisation's settings the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub terms_version: String,
    pub min_user_age: u32,
    pub care_end_grace: IsoDuration,
    pub deceased_grace: IsoDuration,
    pub assume_active_care: bool,
}

/// A client the user may see now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub link_id: i64,
    pub patient_id: String,
    pub role: Role,
    pub sections: SectionSet,
    pub can_post: bool,
}

/// The outcome for a user who passed steps 2–5.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub user_id: i64,
    /// Clients the user may see, in link order.
    pub allowed: Vec<Access>,
    /// Clients the user is linked to but may not see now, with the reason (step 6).
    pub refused: BTreeMap<String, Reason>,
}

impl Decision {
    /// The clients the user may see now, in link order.
    pub fn clients(&self) -> Vec<&str> {
        self.allowed.iter().map(|a| a.patient_id.as_str()).collect()
    }

    pub fn access(&self, patient_id: &str) -> Option<&Access> {
        self.allowed.iter().find(|a| a.patient_id == patient_id)
    }

    /// The role whose redaction applies to a resource of `patient_id`; for resources outside
    /// the patient compartment (no client), the strictest role the user has anywhere.
    pub fn role_for(&self, patient_id: Option<&str>) -> Option<Role> {
        match patient_id {
            Some(p) => self.access(p).map(|a| a.role),
            None => self.allowed.iter().map(|a| a.role).max(),
        }
    }

    /// Steps 6–7 for one resource: whether its client and section are open to the user.
    /// The client's own Patient resource is open to everyone linked, whatever their sections.
    /// Release (step 8) is decided by the stored release moments, not here.
    pub fn may_see(
        &self,
        resource_type: &str,
        patient_id: Option<&str>,
        section: Option<&str>,
    ) -> bool {
        let Some(access) = patient_id.and_then(|p| self.access(p)) else {
            return false;
        };
        if resource_type == "Patient" {
            return true;
        }
        section.is_some_and(|s| access.sections.allows(s))
    }
}

/// A refusal of the whole request (steps 2–5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal(pub Reason);

/// Decides steps 2–6 of contract §5 for one user at `now`.
pub fn decide(
    user: Option<&UserFacts>,
    links: &[LinkFacts],
    clients: &BTreeMap<String, ClientFacts>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Decision, Refusal> {
    let active: Vec<&LinkFacts> = links.iter().filter(|l| !l.ended).collect();
    let Some(user) = user.filter(|_| !active.is_empty()) else {
        return Err(Refusal(Reason::NotLinked));
    };
    if is_blocked(user, now) {
        return Err(Refusal(Reason::UserBlocked));
    }
    if !old_enough(user.birth_date, policy.min_user_age, now) {
        return Err(Refusal(Reason::UnderAge));
    }
    if user.terms_version.as_deref() != Some(policy.terms_version.as_str()) {
        return Err(Refusal(Reason::TermsNotAccepted));
    }
    let mut decision = Decision {
        user_id: user.id,
        ..Default::default()
    };
    let unknown = ClientFacts::default();
    for link in active {
        if decision.access(&link.patient_id).is_some() {
            continue;
        }
        let facts = clients.get(&link.patient_id).unwrap_or(&unknown);
        match client_refusal(facts, policy, now) {
            Some(reason) => {
                decision.refused.insert(link.patient_id.clone(), reason);
            }
            None => decision.allowed.push(Access {
                link_id: link.id,
                patient_id: link.patient_id.clone(),
                role: link.role,
                sections: match (&link.role, &link.sections) {
                    (Role::Member, Some(s)) => SectionSet::Only(s.clone()),
                    (Role::Member, None) => SectionSet::Only(BTreeSet::new()),
                    _ => SectionSet::All,
                },
                can_post: link.can_post,
            }),
        }
    }
    Ok(decision)
}

/// Step 3 (R7): the user is blocked now (a temporary block ends by itself at its `until`).
pub fn is_blocked(user: &UserFacts, now: DateTime<Utc>) -> bool {
    user.blocked && user.blocked_until.is_none_or(|until| until > now)
}

/// Step 6 for one client: blocked, out of care, deceased.
pub fn client_refusal(facts: &ClientFacts, policy: &Policy, now: DateTime<Utc>) -> Option<Reason> {
    if facts.blocked {
        return Some(Reason::PatientBlocked);
    }
    if !in_care(facts, policy, now) {
        return Some(Reason::CareEnded);
    }
    if let Some(died) = facts.deceased_at
        && policy.deceased_grace.after(died) <= now
    {
        return Some(Reason::Deceased);
    }
    None
}

/// R6: in care while an EpisodeOfCare is active (or on hold), and for `care_end_grace` after
/// the last one ended. A client without any episode counts as in care only with
/// `assume_active_care`; planned or waitlisted care is not care yet.
pub fn in_care(facts: &ClientFacts, policy: &Policy, now: DateTime<Utc>) -> bool {
    let counted: Vec<&Episode> = facts
        .episodes
        .iter()
        .filter(|e| !matches!(e.status.as_str(), "cancelled" | "entered-in-error"))
        .collect();
    if counted.is_empty() {
        return policy.assume_active_care;
    }
    let running = counted.iter().any(|e| {
        matches!(e.status.as_str(), "active" | "onhold")
            && e.start.is_none_or(|s| s <= now)
            && e.end.is_none_or(|end| end > now)
    });
    if running {
        return true;
    }
    let ended = counted
        .iter()
        .filter_map(|e| match e.status.as_str() {
            "finished" => Some(e.end.unwrap_or(e.recorded)),
            "active" | "onhold" => e.end.filter(|end| *end <= now),
            _ => None,
        })
        .max();
    ended.is_some_and(|ended| policy.care_end_grace.after(ended) > now)
}

/// R5: the user has reached `min_age` on `now`'s date.
pub fn old_enough(birth_date: Option<NaiveDate>, min_age: u32, now: DateTime<Utc>) -> bool {
    let Some(born) = birth_date else {
        return false;
    };
    let today = now.date_naive();
    let Ok(years) = i32::try_from(min_age) else {
        return false;
    };
    let birthday = born
        .with_year(born.year() + years)
        // Born on 29 February: the birthday is 1 March in other years.
        .or_else(|| NaiveDate::from_ymd_opt(born.year() + years, 3, 1));
    birthday.is_some_and(|b| b <= today)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> Policy {
        Policy {
            terms_version: "2026-01".into(),
            min_user_age: 16,
            care_end_grace: "P7D".parse().unwrap(),
            deceased_grace: IsoDuration::default(),
            assume_active_care: false,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    fn user() -> UserFacts {
        UserFacts {
            id: 1,
            birth_date: NaiveDate::from_ymd_opt(1970, 5, 1),
            terms_version: Some("2026-01".into()),
            blocked: false,
            blocked_until: None,
        }
    }

    fn link(patient: &str, role: Role, sections: Option<&[&str]>) -> LinkFacts {
        LinkFacts {
            id: 7,
            patient_id: patient.into(),
            role,
            sections: sections.map(|s| s.iter().map(|x| x.to_string()).collect()),
            can_post: false,
            ended: false,
            changed_at: None,
        }
    }

    fn episode(status: &str, end: Option<DateTime<Utc>>) -> Episode {
        Episode {
            status: status.into(),
            start: Some(now() - chrono::TimeDelta::days(400)),
            end,
            recorded: now() - chrono::TimeDelta::days(30),
        }
    }

    fn in_care() -> ClientFacts {
        ClientFacts {
            episodes: vec![episode("active", None)],
            ..Default::default()
        }
    }

    fn clients(facts: ClientFacts) -> BTreeMap<String, ClientFacts> {
        BTreeMap::from([("p1".to_string(), facts)])
    }

    #[test]
    fn steps_two_to_five_answer_in_order() {
        let p = policy();
        let links = [link("p1", Role::Holder, None)];
        let c = clients(in_care());
        assert_eq!(
            decide(None, &links, &c, &p, now()),
            Err(Refusal(Reason::NotLinked))
        );
        let ended = [LinkFacts {
            ended: true,
            ..link("p1", Role::Holder, None)
        }];
        assert_eq!(
            decide(Some(&user()), &ended, &c, &p, now()),
            Err(Refusal(Reason::NotLinked))
        );
        let blocked = UserFacts {
            blocked: true,
            birth_date: None,
            terms_version: None,
            ..user()
        };
        assert_eq!(
            decide(Some(&blocked), &links, &c, &p, now()),
            Err(Refusal(Reason::UserBlocked))
        );
        let young = UserFacts {
            birth_date: NaiveDate::from_ymd_opt(2010, 11, 24),
            terms_version: None,
            ..user()
        };
        assert_eq!(
            decide(Some(&young), &links, &c, &p, now()),
            Err(Refusal(Reason::UnderAge))
        );
        let old_terms = UserFacts {
            terms_version: Some("2025-01".into()),
            ..user()
        };
        assert_eq!(
            decide(Some(&old_terms), &links, &c, &p, now()),
            Err(Refusal(Reason::TermsNotAccepted))
        );
        assert!(decide(Some(&user()), &links, &c, &p, now()).is_ok());
    }

    #[test]
    fn sixteen_on_the_birthday_itself() {
        let born = NaiveDate::from_ymd_opt(2010, 11, 23);
        assert!(old_enough(born, 16, now()));
        assert!(!old_enough(
            NaiveDate::from_ymd_opt(2010, 11, 24),
            16,
            now()
        ));
        let leap = NaiveDate::from_ymd_opt(2008, 2, 29);
        let feb28 = Utc.with_ymd_and_hms(2024, 2, 28, 12, 0, 0).unwrap();
        assert!(!old_enough(leap, 16, feb28));
        assert!(old_enough(
            leap,
            16,
            Utc.with_ymd_and_hms(2024, 2, 29, 0, 0, 0).unwrap()
        ));
    }

    #[test]
    fn clients_are_refused_for_block_care_and_death() {
        let p = policy();
        let links = [link("p1", Role::Holder, None)];
        let decide_with = |facts: ClientFacts| {
            decide(Some(&user()), &links, &clients(facts), &p, now())
                .unwrap()
                .refused
                .get("p1")
                .copied()
        };
        assert_eq!(decide_with(in_care()), None);
        assert_eq!(
            decide_with(ClientFacts {
                blocked: true,
                ..in_care()
            }),
            Some(Reason::PatientBlocked)
        );
        assert_eq!(decide_with(ClientFacts::default()), Some(Reason::CareEnded));
        let ended = |days: i64| ClientFacts {
            episodes: vec![episode(
                "finished",
                Some(now() - chrono::TimeDelta::days(days)),
            )],
            ..Default::default()
        };
        assert_eq!(decide_with(ended(6)), None, "within the seven days' grace");
        assert_eq!(decide_with(ended(7)), Some(Reason::CareEnded));
        let lapsed = ClientFacts {
            episodes: vec![episode("active", Some(now() - chrono::TimeDelta::days(8)))],
            ..Default::default()
        };
        assert_eq!(
            decide_with(lapsed),
            Some(Reason::CareEnded),
            "an active episode whose period ended"
        );
        let planned = ClientFacts {
            episodes: vec![episode("planned", None)],
            ..Default::default()
        };
        assert_eq!(
            decide_with(planned),
            Some(Reason::CareEnded),
            "planned care is not care yet"
        );
        let finished_without_end = ClientFacts {
            episodes: vec![Episode {
                end: None,
                ..episode("finished", None)
            }],
            ..Default::default()
        };
        assert_eq!(
            decide_with(finished_without_end),
            Some(Reason::CareEnded),
            "ended when recorded"
        );
        let cancelled = ClientFacts {
            episodes: vec![episode("cancelled", None)],
            ..Default::default()
        };
        assert_eq!(
            decide_with(cancelled),
            Some(Reason::CareEnded),
            "no counted episode, no assumption"
        );
        let died = ClientFacts {
            deceased_at: Some(now()),
            ..in_care()
        };
        assert_eq!(decide_with(died), Some(Reason::Deceased));
    }

    #[test]
    fn members_see_their_sections_and_everyone_the_patient() {
        let p = policy();
        let links = [link("p1", Role::Member, Some(&["agenda"]))];
        let d = decide(Some(&user()), &links, &clients(in_care()), &p, now()).unwrap();
        assert!(d.may_see("Appointment", Some("p1"), Some("agenda")));
        assert!(!d.may_see("Observation", Some("p1"), Some("metingen")));
        assert!(d.may_see("Patient", Some("p1"), Some("dossier")));
        assert!(!d.may_see("Patient", Some("p2"), Some("dossier")));
        assert!(!d.may_see("Claim", Some("p1"), None));
    }
}
