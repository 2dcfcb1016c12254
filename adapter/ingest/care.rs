//! What ingest reads out of the newest versions of EpisodeOfCare and Patient for the access
//! decision (R6): the client's care episodes and death.

use crate::store::resources::NewVersion;

/// Care episodes and death, from the newest versions of EpisodeOfCare and Patient (R6).
pub(super) async fn client_facts(
    tx: &mut crate::store::db::Tx,
    versions: &[NewVersion],
    ids: &std::collections::HashMap<(String, String), i64>,
) -> Result<(), crate::store::Error> {
    use crate::search::dates::{OPEN_HI, OPEN_LO};
    use crate::store::clients;
    // The adapter's own tombstones stand before a version of the same write, which decides.
    for v in versions.iter().filter(|v| !v.synthetic) {
        match v.resource_type.as_str() {
            "EpisodeOfCare" => {
                let Some(&resource_id) = ids.get(&(v.resource_type.clone(), v.fhir_id.clone()))
                else {
                    continue;
                };
                let episode = match (&v.values.patient_id, v.withdrawn) {
                    (Some(patient), false) => {
                        let status = v.values.tokens_of("status").first().map(|(_, c)| c.clone());
                        let period = v.values.dates.iter().find(|(p, _, _)| *p == "date");
                        status.map(|status| clients::Episode {
                            resource_id,
                            patient_id: patient.clone(),
                            status,
                            start_at: period.map(|(_, lo, _)| *lo).filter(|lo| *lo != OPEN_LO),
                            end_at: period.map(|(_, _, hi)| *hi).filter(|hi| *hi != OPEN_HI),
                            recorded_at: v.arrived_at,
                        })
                    }
                    _ => None,
                };
                clients::set_episode(tx, resource_id, episode.as_ref()).await?;
            }
            "Patient" => {
                let body: serde_json::Value = if v.withdrawn {
                    serde_json::Value::Null
                } else {
                    serde_json::from_str(&v.body).unwrap_or_default()
                };
                let deceased = if let Some(at) = body
                    .get("deceasedDateTime")
                    .and_then(serde_json::Value::as_str)
                    .and_then(crate::search::dates::parse)
                {
                    Some(at.lo)
                } else if body
                    .get("deceasedBoolean")
                    .and_then(serde_json::Value::as_bool)
                    == Some(true)
                {
                    // Known since this version arrived, unless known before.
                    Some(
                        clients::deceased_at(tx, &v.fhir_id)
                            .await?
                            .unwrap_or(v.arrived_at),
                    )
                } else {
                    None
                };
                clients::set_deceased(tx, &v.fhir_id, deceased).await?;
            }
            _ => {}
        }
    }
    Ok(())
}
