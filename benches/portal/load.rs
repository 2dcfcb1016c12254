//! An open-loop load generator: requests start on a fixed schedule whatever the answers do,
//! and latency is measured from the scheduled start, so that queueing shows (no coordinated
//! omission). Latencies go into an HDR histogram.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The outcome of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    pub name: String,
    pub rate: f64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests completed per second of wall time.
    #[serde(rename = "achieved_per_s")]
    pub achieved: f64,
    /// The server's CPU time (user and system, all threads) per request, in microseconds;
    /// 0 when the server's process is not known.
    #[serde(rename = "server_cpu_us_per_request")]
    pub server_cpu_us: f64,
    /// PostgreSQL's CPU time (all its processes on this machine) per request, in microseconds;
    /// about 0 on SQLite, which runs inside the server.
    #[serde(rename = "database_cpu_us_per_request")]
    pub database_cpu_us: f64,
}

/// A request to make: URL and portal user.
pub type Request = (String, String);

/// CPU seconds (user and system) a process has used so far.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on Linux.
    Some((utime + stime) / 100.0)
}

/// The machine's CPU time so far, in clock ticks: (all, idle), from `/proc/stat`.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = cpu.get(3)? + cpu.get(4)?;
    Some((cpu.iter().sum(), idle))
}

/// How many cores were busy between two [`machine_jiffies`] readings.
pub fn busy_cores(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> f64 {
    let (Some((a_all, a_idle)), Some((b_all, b_idle))) = (before, after) else {
        return 0.0;
    };
    let all = b_all.saturating_sub(a_all);
    if all == 0 {
        return 0.0;
    }
    let busy = all.saturating_sub(b_idle.saturating_sub(a_idle));
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    busy as f64 / all as f64 * cores as f64
}

/// CPU seconds used so far by the processes named `postgres` on this machine (the server's
/// backends, the checkpointer, the WAL writer…): the database's side of a request's cost.
/// Backends that ended are not counted, so it is read around runs on a pool that stays open.
pub fn database_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, _) = stat.rsplit_once(')')?;
            if !head.ends_with("(postgres") {
                return None;
            }
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            process_cpu_secs(pid)
        })
        .sum()
}

/// Fires `make(i)` at `rate` per second for `duration`, each on its own task; `server` is the
/// process whose CPU time is charged to the requests.
pub async fn fixed_rate(
    name: &str,
    http: &reqwest::Client,
    token: &str,
    rate: f64,
    duration: Duration,
    server: Option<u32>,
    make: impl Fn(u64) -> Request,
) -> Run {
    let cpu_before = server.and_then(process_cpu_secs);
    let db_before = database_cpu_secs();
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let errors = Arc::new(Mutex::new(0u64));
    let total = (rate * duration.as_secs_f64()) as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let (url, user) = make(i);
        let (http, token, hist, errors) = (
            http.clone(),
            token.to_string(),
            hist.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = match http
                .get(&url)
                .bearer_auth(&token)
                .header("x-portal-user", user)
                .send()
                .await
            {
                Ok(r) => {
                    let ok = r.status().is_success();
                    ok && r.bytes().await.is_ok()
                }
                Err(_) => false,
            };
            let micros = if std::env::var("SLUIS_BENCH_FROM_SEND").is_ok() {
                sent.elapsed().as_micros().max(1) as u64
            } else {
                scheduled.elapsed().as_micros().max(1) as u64
            };
            if let Ok(mut h) = hist.lock() {
                let _ = h.record(micros.min(60_000_000));
            }
            if !ok && let Ok(mut e) = errors.lock() {
                *e += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu_before, server.and_then(process_cpu_secs)) {
        (Some(a), Some(b)) if total > 0 => (b - a) * 1e6 / total as f64,
        _ => 0.0,
    };
    let db_cpu = (database_cpu_secs() - db_before).max(0.0) * 1e6 / total.max(1) as f64;
    let h = hist.lock().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Run {
        name: name.to_string(),
        rate,
        requests: total,
        errors: *errors.lock().unwrap(),
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: h.max() as f64 / 1000.0,
        achieved: total as f64 / wall,
        server_cpu_us: cpu,
        database_cpu_us: db_cpu,
    }
}

/// Latency percentiles of a closed loop of `workers` running `op` for `duration`: the
/// throughput the operation reaches, and its latency when nothing queues.
pub async fn closed_loop<F, Fut>(workers: usize, duration: Duration, op: F) -> (f64, f64, f64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (op, hist) = (op.clone(), hist.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w as u64;
            let mut done = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(i).await {
                    done += 1;
                }
                if let Ok(mut h) = hist.lock() {
                    let _ = h.record((t.elapsed().as_micros() as u64).max(1));
                }
                i += workers as u64;
            }
            done
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await.unwrap_or(0);
    }
    let h = hist.lock().unwrap();
    (
        done as f64 / duration.as_secs_f64(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}
