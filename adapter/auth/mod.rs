//! Who is calling: access tokens (`POST /auth/token`) and the extractors that check them.
//!
//! Clients of `[[clients]]` authenticate with a client secret (HTTP Basic) or a signed JWT
//! (`assertion`, SMART Backend Services), and get short-lived bearer tokens, signed (HS256,
//! with a `kid`) with the key of a file (`auth.signing_key`; earlier keys still verify), never
//! one the database holds; processes that share the file accept each other's tokens. What a
//! token's client may do is read from config on every request. Portal calls also name the person (`X-Portal-User`); what that
//! person may see is `access`'s decision, not this module's.

pub mod assertion;
pub mod extract;
pub mod jwks;
pub mod limit;
pub mod scope;
pub mod token;

pub use extract::{Admin, Portal, PortalUser, SourceClient};
pub use limit::{Limiter, Limits};
pub use scope::{Interaction, Scopes};
pub use token::TokenKeys;
