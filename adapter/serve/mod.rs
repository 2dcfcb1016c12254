//! Serving FHIR to portal vendors: read, search, `_include`, Bundles, paging, and the
//! CapabilityStatement. This module never decides access: it asks `access` for the decision
//! and hands it to `search::sql`, which puts it in the query.

pub mod bundle;
pub mod consent;
pub mod history;
pub mod metadata;
pub mod read;
