//! What a run measured, as the benchmark writes it (`target/bench/portal-<engine>.json`). The
//! field names are the file's keys and their order is the file's order: earlier result files
//! stay comparable, so rename nothing here without need.

use crate::load;
use crate::targets::Verdict;
use serde::Serialize;

/// One engine's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub engine: String,
    pub ceilings: Ceilings,
    /// One client, then four (only the four-client push in a `SLUIS_BENCH_ONLY=filters` run).
    pub ingest: Vec<Ingest>,
    /// The same dataset pulled from a record system; `None` when the run left it out
    /// (`SLUIS_BENCH_ONLY=filters`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullRun>,
    /// The portal's queries at fixed rates; `None` when the run left them out
    /// (`SLUIS_BENCH_ONLY=ingest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<Vec<load::Run>>,
    /// On PostgreSQL, the portal's searches again at half the rate (about what twice the cores
    /// give at the full rate); `None` on SQLite and when the searches were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_half_rate: Option<Vec<load::Run>>,
    /// `None` when the run left them out (`SLUIS_BENCH_ONLY=ingest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
    /// Auditing on against off; `None` when the run left the searches out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditCost>,
    /// The same comparison with eight clients (shown, not judged).
    pub audit_few: Option<AuditCost>,
    pub storage: Storage,
    pub memory: Memory,
    /// The targets judged from the rest ([`crate::targets::verdicts`]); empty until then.
    pub targets: Vec<Verdict>,
}

/// The machine's ceilings, measured in the same run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ceilings {
    pub json: JsonCeiling,
    pub steps: CpuSteps,
    pub sqlite_insert: SqliteInsert,
}

/// JSON parse and serialize of the dataset's resources, single-threaded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JsonCeiling {
    pub parse_mb_per_s: f64,
    pub parse_resources_per_s: f64,
    pub serialize_mb_per_s: f64,
    pub serialize_resources_per_s: f64,
}

/// The CPU of ingest's own steps, one thread, in microseconds per resource.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuSteps {
    /// The adapter's checks.
    pub checks_us: f64,
    /// fhirbolt's check.
    pub fhirbolt_us: f64,
    /// fhirbolt's check as ingest makes it, by the shapes fhirbolt has passed.
    pub fhirbolt_remembered_us: f64,
    /// A copy of the tree.
    pub copy_us: f64,
    /// The search values.
    pub index_us: f64,
}

/// A plain SQLite insert of the same resources and index rows: batched, row by row, and row
/// by row with the index rows keyed by value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SqliteInsert {
    pub keyed_by_value_resources_per_s: f64,
    pub row_by_row_resources_per_s: f64,
    pub row_by_row_mb_per_s: f64,
    /// Batched.
    pub resources_per_s: f64,
    /// Batched.
    pub mb_per_s: f64,
    pub index_rows_per_resource: f64,
    /// Of the batched insert.
    pub seconds: f64,
}

/// One push of every Bundle, as measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestRun {
    /// Concurrent clients.
    pub workers: usize,
    pub bundles: usize,
    pub resources: usize,
    pub seconds: f64,
    pub resources_per_s: f64,
    pub mb_per_s: f64,
    pub bundle_p50_ms: f64,
    pub bundle_p99_ms: f64,
    pub server_cpu_us_per_resource: f64,
}

/// The dataset pulled from an in-process record system (`[sources.pull]`, one source, every
/// type in turn), against the one-client push of the same run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullRun {
    pub resources: usize,
    pub page_size: u32,
    pub seconds: f64,
    pub resources_per_s: f64,
    pub server_cpu_us_per_resource: f64,
    /// To the one-client push's rate (0 when that push was left out).
    pub ratio_to_push: f64,
}

/// An ingest run against the SQLite ceilings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ingest {
    #[serde(flatten)]
    pub run: IngestRun,
    /// To the batched insert.
    pub ratio_to_ceiling: f64,
    pub ratio_to_row_by_row: f64,
    /// The keyed-by-value ceiling (resources/s) before and after the one-client push.
    pub keyed_by_value_readings: [f64; 2],
    /// To the mean of the two readings.
    pub ratio_to_keyed_by_value: f64,
}

impl Ingest {
    /// `run` against the ceilings, with the keyed-by-value insert read `keyed` (before and
    /// after the one-client push).
    pub fn against(run: IngestRun, ceiling: &SqliteInsert, keyed: [f64; 2]) -> Self {
        let rate = run.resources_per_s;
        Self {
            ratio_to_ceiling: rate / ceiling.resources_per_s,
            ratio_to_row_by_row: rate / ceiling.row_by_row_resources_per_s,
            keyed_by_value_readings: keyed,
            ratio_to_keyed_by_value: rate / ((keyed[0] + keyed[1]) / 2.0),
            run,
        }
    }
}

/// What the audit trail costs the portal's searches: the holder's query as fast as the server
/// answers it, on the same database, by servers with auditing on and off, alternated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditCost {
    /// Clients of the closed loop.
    pub clients: usize,
    /// Queries per second, one reading per server started, in the order run.
    pub on_per_s: Vec<f64>,
    pub off_per_s: Vec<f64>,
    /// Medians of the readings' p99, ms.
    pub on_p99_ms: f64,
    pub off_p99_ms: f64,
    /// Server CPU per query, µs (medians).
    pub on_cpu_us: f64,
    pub off_cpu_us: f64,
    /// The machine's cores busy during a reading (medians): at the core count, the comparison
    /// is of what each side can do.
    pub on_busy_cores: f64,
    pub off_busy_cores: f64,
    /// 1 − the median on / the median off.
    pub throughput_cost: f64,
}

/// The cost of the consent and delay filters, per role.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filters {
    pub holder: FilterCost,
    pub member: FilterCost,
}

impl Filters {
    /// Each role by name.
    pub fn roles(&self) -> [(&'static str, &FilterCost); 2] {
        [("holder", &self.holder), ("member", &self.member)]
    }
}

/// The same portal query with and without the filters, in slices taken in pairs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FilterCost {
    /// Medians over the slices.
    pub filtered_per_s: f64,
    pub filtered_p50_ms: f64,
    pub filtered_p99_ms: f64,
    pub unfiltered_per_s: f64,
    pub unfiltered_p50_ms: f64,
    pub unfiltered_p99_ms: f64,
    /// 1 − the median over the pairs of filtered/unfiltered throughput.
    pub throughput_cost: f64,
    pub p50_cost_ms: f64,
    /// The cheapest and the costliest pair.
    pub pair_cost_range: [f64; 2],
    pub filtered_slices_per_s: Vec<f64>,
    pub unfiltered_slices_per_s: Vec<f64>,
}

/// The database's size after ingest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storage {
    pub bytes: f64,
    pub raw_json_bytes: usize,
    pub ratio_to_raw: f64,
    pub bytes_per_resource: f64,
}

/// The server's resident memory, in MB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// At the end of the searches; `None` when the run stopped after ingest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_mb: Option<f64>,
    /// Peak (VmHWM) at the end of the searches; `None` when the run stopped after ingest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
    pub peak_rss_after_ingest_mb: f64,
}

impl Memory {
    /// The peak over the whole run, or over ingest when the run stopped there.
    pub fn peak(&self) -> f64 {
        self.peak_rss_mb.unwrap_or(self.peak_rss_after_ingest_mb)
    }
}
