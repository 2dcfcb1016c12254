//! Messages from portal users to the care team (issue 23; R13, R15, R20): `POST
//! /fhir/Communication` keeps a message waiting for moderation; `/admin/moderation` lists the
//! waiting ones and approves or rejects them (a rejection with its reason). An approved
//! message becomes a Communication of the client's source, shown in section `berichten` at
//! once to those who may see that section; the sender reads their own message, whatever its
//! state, at `GET /fhir/Communication/{id}`.

pub mod decide;
pub mod moderation;
pub mod post;
pub mod requests;

/// What the portal and the CapabilityStatement say of messages (R20).
pub const NOT_URGENT: &str = "Berichten zijn niet bedoeld voor spoedeisende zaken: bel bij spoed \
     uw zorgverlener of 112. (Messages are not for urgent matters.)";

/// The identifier system of a message: its id, the key a record system can deduplicate on.
pub const IDENTIFIER_SYSTEM: &str = "urn:sluis:message";

/// The identifier system of a correction request, and the code system of its kind (R14).
pub const REQUEST_SYSTEM: &str = "urn:sluis:request";
