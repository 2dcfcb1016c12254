//! The explanation delay (R11, R12): when a version becomes visible on the portal.
//!
//! The release moment is computed once, at ingest, from the embargo rule and the arrival
//! moment, and stored with the version; "shown yet?" is then `release_at <= now` on an index.
//! No background job flips flags. A staff release or hold, or a changed rule, rewrites the
//! stored moment. This module computes moments; it never reads the clock itself.

use crate::config::OnUpdate;
use crate::mapping::embargo::Delay;
use crate::time::{Micros, from_micros, to_micros};

/// What is known of a resource's earlier versions when a new one arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prior {
    /// Some earlier version was visible at the arrival moment.
    pub shown: bool,
    /// The newest earlier version is still waiting: its release moment (`None`: manual/never).
    pub pending: Option<Option<Micros>>,
}

/// Everything that decides one version's release moment.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub arrived_at: Micros,
    pub delay: Delay,
    pub on_update: OnUpdate,
    /// A withdrawal (delete or entered-in-error): gone at once.
    pub withdrawn: bool,
    /// The source marked the resource as explained (`embargo.release_tag`).
    pub release_tag: bool,
    pub prior: Prior,
}

/// The release moment of a new version, `None` for "not until a staff member releases it".
pub fn release_at(i: &Inputs) -> Option<Micros> {
    if i.withdrawn || i.release_tag {
        return Some(i.arrived_at);
    }
    let own = match i.delay {
        Delay::Immediate => Some(i.arrived_at),
        Delay::After(d) => Some(to_micros(d.after(from_micros(i.arrived_at)))),
        Delay::Manual | Delay::Never => None,
    };
    let own = own?;
    if i.prior.shown && i.on_update == OnUpdate::Immediate {
        return Some(i.arrived_at);
    }
    match i.prior.pending {
        // A correction of an entry still in its delay keeps the entry's moment: the delay
        // started when the entry first arrived, and the superseded text is never shown.
        Some(Some(pending)) if !i.prior.shown => Some(own.min(pending)),
        _ => Some(own),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::IsoDuration;

    const DAY: i64 = 86_400_000_000;

    fn inputs(delay: Delay) -> Inputs {
        Inputs {
            arrived_at: 100 * DAY,
            delay,
            on_update: OnUpdate::Delay,
            withdrawn: false,
            release_tag: false,
            prior: Prior::default(),
        }
    }

    #[test]
    fn a_new_entry_waits_its_delay() {
        let fourteen = Delay::After(IsoDuration::days(14));
        assert_eq!(release_at(&inputs(fourteen)), Some(114 * DAY));
        assert_eq!(release_at(&inputs(Delay::Immediate)), Some(100 * DAY));
        assert_eq!(release_at(&inputs(Delay::Manual)), None);
        assert_eq!(release_at(&inputs(Delay::Never)), None);
    }

    #[test]
    fn withdrawals_and_explained_entries_are_immediate() {
        let fourteen = Delay::After(IsoDuration::days(14));
        assert_eq!(
            release_at(&Inputs {
                withdrawn: true,
                ..inputs(Delay::Never)
            }),
            Some(100 * DAY)
        );
        assert_eq!(
            release_at(&Inputs {
                release_tag: true,
                ..inputs(fourteen)
            }),
            Some(100 * DAY)
        );
    }

    #[test]
    fn updates_follow_on_update() {
        let fourteen = Delay::After(IsoDuration::days(14));
        let shown = Prior {
            shown: true,
            pending: None,
        };
        assert_eq!(
            release_at(&Inputs {
                prior: shown,
                ..inputs(fourteen)
            }),
            Some(114 * DAY)
        );
        let immediate = Inputs {
            prior: shown,
            on_update: OnUpdate::Immediate,
            ..inputs(fourteen)
        };
        assert_eq!(release_at(&immediate), Some(100 * DAY));
        let waiting = Prior {
            shown: false,
            pending: Some(Some(105 * DAY)),
        };
        assert_eq!(
            release_at(&Inputs {
                prior: waiting,
                ..inputs(fourteen)
            }),
            Some(105 * DAY)
        );
    }
}
