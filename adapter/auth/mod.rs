//! Who is calling: access tokens (`POST /auth/token`) and the extractors that check them.
//!
//! Clients of `[[clients]]` authenticate with a client secret (HTTP Basic) or a signed JWT
//! (`assertion`, SMART Backend Services), and get short-lived bearer tokens, signed (HS256)
//! with a key the
//! adapter keeps in its database, so that every process in front of one database accepts
//! every other's tokens. Portal calls also name the person (`X-Portal-User`); what that
//! person may see is `access`'s decision, not this module's.

pub mod assertion;
pub mod extract;
pub mod limit;
pub mod token;

pub use extract::{Admin, Portal, PortalUser, SourceClient};
pub use limit::UserLimiter;
pub use token::TokenKeys;
