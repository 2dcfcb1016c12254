//! The command line (contract §1): demo, serve, migrate, check, import, audit verify, prune
//! and export.

use crate::app::{AppState, Application, redact_url};
use crate::clock::Clock;
use crate::config::{ClientAuth, Config};
use crate::ingest::entries::{self, Entry, Method, Mode};
use crate::mapping::Mappings;
use crate::store::Db;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sluis",
    version,
    about = "Care dossier in as FHIR R4, held back for the explanation delay, served per the client's consent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the demo on an embedded SQLite file with demo data, and prints how to try it.
    Demo {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The SQLite file (recreated on every start).
        #[arg(long, default_value = "sluis-demo.db")]
        database: PathBuf,
    },
    /// Runs the service as configured.
    Serve {
        #[arg(long, env = "SLUIS_CONFIG")]
        config: PathBuf,
    },
    /// Applies database migrations and exits.
    Migrate {
        #[arg(long, env = "SLUIS_CONFIG")]
        config: PathBuf,
    },
    /// Validates config and mappings; lists what is not mapped to any section.
    Check {
        #[arg(long, env = "SLUIS_CONFIG")]
        config: PathBuf,
    },
    /// The audit trail: `verify` checks its hash chain (exit 1 and the first broken record).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ingests FHIR JSON files (resources, Bundles, .ndjson) as pushes of one source.
    Import {
        #[arg(long, env = "SLUIS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        source: String,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks the audit log's hash chain; names the first broken record.
    Verify {
        #[arg(long, env = "SLUIS_CONFIG")]
        config: PathBuf,
    },
    /// Removes the records older than `[audit] retention` (the chain still verifies).
    Prune {
        #[arg(long, env = "SLUIS_CONFIG")]
        config: PathBuf,
        /// Removes only what is older than this instant (at most now minus the retention).
        #[arg(long)]
        before: Option<String>,
    },
    /// Writes audit records as NDJSON to standard output, oldest first.
    Export {
        #[arg(long, env = "SLUIS_CONFIG")]
        config: PathBuf,
        /// From this instant (e.g. 2026-01-01T00:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Up to this instant.
        #[arg(long)]
        to: Option<String>,
    },
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo { listen, database } => crate::demo::run(listen, &database).await,
            Command::Serve { config } => serve(&config).await,
            Command::Migrate { config } => migrate(&config).await,
            Command::Check { config } => return check(&config).await,
            Command::Audit {
                command: AuditCommand::Verify { config },
            } => return audit_verify(&config).await,
            Command::Audit {
                command: AuditCommand::Prune { config, before },
            } => audit_prune(&config, before.as_deref()).await,
            Command::Audit {
                command: AuditCommand::Export { config, from, to },
            } => audit_export(&config, from.as_deref(), to.as_deref()).await,
            Command::Import {
                config,
                source,
                paths,
            } => import(&config, &source, &paths).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path)
        .map_err(|problems| anyhow::anyhow!("the configuration has problems:\n{problems}"))
}

async fn serve(path: &Path) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let app = Application::build(config, Clock::system()).await?;
    if let Ok(addr) = app.local_addr() {
        tracing::info!(%addr, "serving");
    }
    app.run_until_stopped().await
}

async fn migrate(path: &Path) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let url = config.database.url.expose_secret();
    let db = Db::connect(url, 1).await?;
    db.migrate().await?;
    println!("migrations applied to {}", redact_url(url));
    Ok(())
}

/// The database of an audit command, migrated, with the records that stopped processes left
/// in its journal (`audit/journal.rs`) moved into the log.
async fn audit_db(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(config.database.url.expose_secret(), 1).await?;
    if !db.is_migrated().await? {
        anyhow::bail!("the database is not migrated: run `sluis migrate` first");
    }
    if let Some(file) = db.sqlite_file() {
        let dir = crate::audit::journal::dir_of(file);
        let moved = crate::audit::journal::recover(&db, &dir).await?;
        if moved > 0 {
            eprintln!(
                "{moved} audit records a stopped process left in its journal were moved into the log"
            );
        }
    }
    Ok(db)
}

/// `sluis audit verify`: walks the chain from the first record; exit 1 at the first break.
async fn audit_verify(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let db = audit_db(&config).await?;
    match crate::audit::chain::verify(&db).await? {
        crate::audit::chain::Verdict::Intact(n) => {
            match crate::store::audit::anchor(&db).await? {
                Some(a) => println!(
                    "the audit chain is intact: {n} records, from record {} (those older than {} were pruned)",
                    a.upto + 1,
                    crate::time::instant(crate::time::from_micros(a.before))
                ),
                None => println!("the audit chain is intact: {n} records"),
            }
            Ok(ExitCode::SUCCESS)
        }
        crate::audit::chain::Verdict::Broken { seq, why } => {
            eprintln!("the audit chain is broken at record {seq}: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `sluis audit prune`: removes what is older than the retention period (or than `--before`,
/// which may not be later), and says what it did.
async fn audit_prune(path: &Path, before: Option<&str>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let db = audit_db(&config).await?;
    let now = Clock::system().wall();
    // Never less than five years back, however the retention's months and days fall.
    let limit = config
        .audit
        .retention
        .before(now)
        .min(crate::time::IsoDuration::years(5).before(now));
    let before = match before {
        None => limit,
        Some(text) => {
            let at = crate::time::parse_instant(text).ok_or_else(|| {
                anyhow::anyhow!("--before: `{text}` is not an instant (e.g. 2021-01-01T00:00:00Z)")
            })?;
            if at > limit {
                anyhow::bail!(
                    "--before {text}: records younger than the retention period ({}) must be kept; \
                     the latest allowed is {}",
                    config.audit.retention,
                    crate::time::instant(limit)
                );
            }
            at
        }
    };
    let pruned = crate::audit::prune::prune(
        &db,
        crate::time::to_micros(before),
        crate::time::to_micros(now),
    )
    .await?;
    match pruned.upto {
        Some(upto) => println!(
            "removed {} records older than {}; the chain goes on from record {}",
            pruned.removed,
            crate::time::instant(before),
            upto + 1
        ),
        None => println!(
            "no record is older than {}: nothing removed",
            crate::time::instant(before)
        ),
    }
    Ok(())
}

/// `sluis audit export`: the records (with their hashes) as NDJSON, a page at a time.
async fn audit_export(path: &Path, from: Option<&str>, to: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    let moment = |name: &str, text: Option<&str>| -> anyhow::Result<Option<i64>> {
        text.map(|t| {
            crate::time::parse_instant(t)
                .map(crate::time::to_micros)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--{name}: `{t}` is not an instant such as 2026-01-01T00:00:00Z"
                    )
                })
        })
        .transpose()
    };
    let mut filter = crate::store::audit::Filter {
        from: moment("from", from)?,
        to: moment("to", to)?,
        limit: 5000,
        ..Default::default()
    };
    let config = load_config(path)?;
    let db = audit_db(&config).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let page = crate::store::audit::search(&db, &filter).await?;
        for r in &page {
            let mut v = serde_json::to_value(r)?;
            v["at"] = serde_json::json!(crate::time::instant(crate::time::from_micros(r.at)));
            writeln!(out, "{v}")?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == filter.limit => filter.after = last.seq,
            _ => break,
        }
    }
    out.flush()?;
    Ok(())
}

/// `sluis check`: every problem with its file and key; exit 0 only if all is valid.
async fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let config = match Config::load(path) {
        Ok(c) => Some(c),
        Err(p) => {
            problems.extend(p.0.iter().map(ToString::to_string));
            None
        }
    };
    let (dir, default_delay) = match &config {
        Some(c) => (c.mappings.dir.clone(), c.embargo.default.clone()),
        None => (Some(PathBuf::from("mappings")), "P14D".to_string()),
    };
    let mappings = match Mappings::load(dir.as_deref(), &default_delay) {
        Ok(m) => Some(m),
        Err(p) => {
            problems.extend(p.iter().map(ToString::to_string));
            None
        }
    };
    if let Some(c) = &config {
        for (i, client) in c.clients.iter().enumerate() {
            if let ClientAuth::PrivateKeyJwt {
                jwks: crate::config::Jwks::Path(jwks_path),
            } = &client.auth
            {
                let keys = std::fs::read_to_string(jwks_path)
                    .ok()
                    .and_then(|t| serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&t).ok());
                let place = format!("{}: clients[{i}].jwks_path", path.display());
                match keys {
                    None => problems.push(format!(
                        "{place}: `{}` is not a readable JWKS file",
                        jwks_path.display()
                    )),
                    Some(set) if set.keys.is_empty() => {
                        problems.push(format!("{place}: `{}` holds no key", jwks_path.display()));
                    }
                    Some(set) => {
                        let raw: serde_json::Value = std::fs::read_to_string(jwks_path)
                            .ok()
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or_default();
                        for (n, key) in raw["keys"].as_array().into_iter().flatten().enumerate() {
                            let private: Vec<&str> = ["d", "p", "q", "dp", "dq", "qi", "k"]
                                .into_iter()
                                .filter(|m| key.get(m).is_some())
                                .collect();
                            if !private.is_empty() {
                                problems.push(format!(
                                    "{place}: key {n} holds private key material ({}): a JWKS given to sluis holds public keys only; make a new key pair",
                                    private.join(", ")
                                ));
                            }
                        }
                        let mut kids: Vec<&str> = set
                            .keys
                            .iter()
                            .filter_map(|k| k.common.key_id.as_deref())
                            .collect();
                        kids.sort_unstable();
                        if let Some(twice) = kids.windows(2).find(|w| w[0] == w[1]) {
                            problems.push(format!("{place}: the kid `{}` is used twice", twice[0]));
                        }
                        for key in &set.keys {
                            if let Some(problem) = crate::auth::assertion::weak_key(key) {
                                problems.push(format!(
                                    "{place}: key {}: {problem}",
                                    key.common.key_id.as_deref().unwrap_or("(without kid)")
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let Err(e) = crate::auth::TokenKeys::load(&c.auth) {
            problems.push(format!("{}: auth.signing_key: {e:#}", path.display()));
        }
        for (i, source) in c.sources.iter().enumerate() {
            if let Some(pull) = &source.pull
                && let Err(e) = crate::pull::check_key(&pull.auth)
            {
                problems.push(format!(
                    "{}: sources[{i}].pull.auth.key_path: {e:#}",
                    path.display()
                ));
            }
            if let Some(writeback) = &source.writeback
                && let Err(e) = crate::pull::check_key(&writeback.auth)
            {
                problems.push(format!(
                    "{}: sources[{i}].writeback.auth.key_path: {e:#}",
                    path.display()
                ));
            }
        }
    }
    if let Some(c) = &config
        && !c.audit.enabled
    {
        problems.push(format!(
            "{}: audit.enabled = false: no audit trail is written (NEN 7513 requires one); \
             for measuring what it costs only, never in production",
            path.display()
        ));
    }
    if let Some(m) = &mappings {
        println!("{}", crate::mapping::report::coverage(m));
        if let Some(c) = &config
            && let Ok(db) = Db::connect(c.database.url.expose_secret(), 1).await
            && db.is_migrated().await.unwrap_or(false)
        {
            match crate::mapping::report::stored_unmapped(&db).await {
                Ok(text) => println!("{text}"),
                Err(e) => problems.push(format!(
                    "cannot read the store: {:#}",
                    anyhow::Error::from(e)
                )),
            }
        }
    }
    if problems.is_empty() {
        println!("config and mappings are valid");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("{} problem(s) found", problems.len());
        Ok(ExitCode::FAILURE)
    }
}

/// `sluis import`: files through the same path as a push. On a terminal a progress line
/// (files, resources, rate) stands below the per-file lines; elsewhere only those are written.
async fn import(path: &Path, source: &str, paths: &[PathBuf]) -> anyhow::Result<()> {
    let config = load_config(path)?;
    if !config.has_source(source) {
        anyhow::bail!("no [[sources]] entry has id `{source}`");
    }
    let state = AppState::new(config, Clock::system()).await?;
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let bar = indicatif::ProgressBar::new(bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
        )?
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let (mut failed, mut resources) = (0usize, 0usize);
    for (done, file) in files.iter().enumerate() {
        match import_file(&state, source, file, None).await {
            Ok(imported) => {
                resources += imported.entries;
                bar.suspend(|| println!("{}: {imported}", file.display()));
            }
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("{}: {e:#}", file.display()));
            }
        }
        bar.inc(std::fs::metadata(file).map_or(0, |m| m.len()));
        bar.set_message(progress(
            done + 1,
            files.len(),
            resources,
            started.elapsed().as_secs_f64(),
        ));
    }
    bar.finish_and_clear();
    println!(
        "{}",
        progress(
            files.len(),
            files.len(),
            resources,
            started.elapsed().as_secs_f64()
        )
    );
    state.db.analyze().await?;
    state.auditor.flush().await?;
    if failed > 0 {
        anyhow::bail!("{failed} file(s) were not imported");
    }
    Ok(())
}

/// The progress line: files done of all, resources, and their rate.
fn progress(done: usize, files: usize, resources: usize, seconds: f64) -> String {
    let rate = if seconds > 0.0 {
        resources as f64 / seconds
    } else {
        0.0
    };
    format!("{done}/{files} files, {resources} resources, {rate:.0} resources/s")
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir()
                || matches!(
                    e.extension().and_then(|x| x.to_str()),
                    Some("json" | "ndjson")
                )
            {
                collect_files(&e, out)?;
            }
        }
    } else if path.exists() {
        out.push(path.to_path_buf());
    } else {
        anyhow::bail!("{} does not exist", path.display());
    }
    Ok(())
}

/// Imports one file: a Bundle or resource (`.json`), or one resource per line (`.ndjson`).
/// Collection and searchset Bundles are imported entry by entry as updates.
pub async fn import_file(
    state: &AppState,
    source: &str,
    file: &Path,
    arrived_at: Option<i64>,
) -> anyhow::Result<Imported> {
    let bytes = std::fs::read(file)?;
    let is_ndjson = file.extension().and_then(|x| x.to_str()) == Some("ndjson");
    let (mode, parsed) = if is_ndjson {
        let mut parsed = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| anyhow::anyhow!("line {}: malformed JSON: {e}", i + 1))?;
            parsed.push(as_update(i, value));
        }
        (Mode::Batch, parsed)
    } else {
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("malformed JSON: {e}"))?;
        let bundle_type = value
            .get("type")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        let is_bundle = value.get("resourceType").and_then(|t| t.as_str()) == Some("Bundle");
        if is_bundle && !matches!(bundle_type.as_deref(), Some("transaction" | "batch")) {
            let items = value
                .get("entry")
                .and_then(|e| e.as_array())
                .cloned()
                .unwrap_or_default();
            let parsed = items
                .into_iter()
                .enumerate()
                .filter_map(|(i, e)| e.get("resource").cloned().map(|r| as_update(i, r)))
                .collect();
            (Mode::Batch, parsed)
        } else {
            entries::split(value).map_err(|d| {
                anyhow::anyhow!(
                    "{}",
                    d.iter()
                        .map(|x| x.message.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?
        }
    };
    let outcomes = crate::ingest::ingest(
        state,
        source,
        mode,
        parsed.into_iter().map(entries::Sent::Read).collect(),
        arrived_at,
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    let failed: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            o.error
                .as_ref()
                .map(|e| format!("entry {i}: {}", describe(e)))
        })
        .collect();
    let written = outcomes
        .iter()
        .filter(|o| o.error.is_none() && o.note.as_deref() != Some(crate::ingest::UNCHANGED))
        .count();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} stored, {} refused:\n  {}",
            written,
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(Imported {
        entries: outcomes.len(),
        stored: written,
    })
}

/// What one file gave: its entries, and how many of them were new or changed.
pub struct Imported {
    pub entries: usize,
    pub stored: usize,
}

impl std::fmt::Display for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} entries, {} stored", self.entries, self.stored)
    }
}

fn as_update(index: usize, resource: serde_json::Value) -> entries::Parsed {
    let ty = resource
        .get("resourceType")
        .and_then(|t| t.as_str())
        .map(str::to_string);
    let id = resource
        .get("id")
        .and_then(|t| t.as_str())
        .map(str::to_string);
    Ok(Entry {
        index,
        full_url: None,
        method: if id.is_some() {
            Method::Update
        } else {
            Method::Create
        },
        target: ty.zip(id),
        if_none_exist: None,
        resource: Some(resource),
    })
}

/// An error as one line, with the elements it names.
pub fn describe(e: &crate::error::ApiError) -> String {
    let mut text = e.message.clone();
    for d in &e.details {
        text.push_str("; ");
        if let Some(x) = &d.expression {
            text.push_str(x);
            text.push_str(": ");
        }
        text.push_str(&d.message);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_progress_line_counts_files_resources_and_their_rate() {
        assert_eq!(
            super::progress(3, 10, 1500, 2.0),
            "3/10 files, 1500 resources, 750 resources/s"
        );
        assert_eq!(
            super::progress(0, 0, 0, 0.0),
            "0/0 files, 0 resources, 0 resources/s"
        );
    }
}
