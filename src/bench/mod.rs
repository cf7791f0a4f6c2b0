//! `sociogate bench`: throughput, latency and memory, each beside a baseline measured in the
//! same run on the same machine. Absolute numbers on a shared two-core machine move from run to
//! run; the ratios are what to compare. Method and latest results: BENCHMARKS.md.

use std::time::Duration;

use serde::Serialize;

use crate::model::Jurisdiction;
use crate::pipeline::Engine;

pub mod broker;
pub mod inprocess;
pub mod workload;

use inprocess::Baseline;
use workload::{Size, Spec};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Under two minutes: fewer messages, one store, one load level.
    pub quick: bool,
    /// Seed of the workload.
    pub seed: u64,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// PostgreSQL URL for the PostgreSQL runs (none: SQLite only).
    pub postgres_url: Option<String>,
    /// Messages for the end-to-end run.
    pub messages: usize,
    /// Deliveries in flight per consumer: `serve`'s `amqp.prefetch` and the baselines' alike.
    pub prefetch: u16,
    /// `serve` publishes the canonical JSON for providers too (`amqp.publish_canonical`, its
    /// default): a third output per accepted referral. Off in the series of BENCHMARKS.md.
    pub publish_canonical: bool,
    /// Which parts, stores and loads to run (default: everything).
    pub selection: Selection,
    /// Whose referrals the end-to-end, latency and memory parts send, in turn; empty: German
    /// only (the workload of every run before 2026-12-07's fourth session).
    pub referrals: Vec<Jurisdiction>,
    /// The format the end-to-end, latency and memory parts send the referrals in.
    pub format: PayloadFormat,
}

/// The wire format of the referrals the store-backed parts send (the in-process part always
/// measures all three).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadFormat {
    /// FHIR R4 JSON message Bundles (every run before the 2026-12-08 session).
    #[default]
    FhirJson,
    /// The same Bundles as FHIR R4 XML.
    FhirXml,
    /// CDA R2 documents generated from each country's example CDA referral.
    Cda,
}

impl PayloadFormat {
    /// Name for tables and `--json`, as in the in-process rows.
    pub fn name(self) -> &'static str {
        match self {
            PayloadFormat::FhirJson => "fhir-json",
            PayloadFormat::FhirXml => "fhir-xml",
            PayloadFormat::Cda => "cda",
        }
    }

    /// The AMQP `content-type` the referrals are sent with.
    pub fn content_type(self) -> &'static str {
        match self {
            PayloadFormat::FhirJson => crate::forward::FHIR_JSON,
            PayloadFormat::FhirXml => crate::forward::FHIR_XML,
            PayloadFormat::Cda => crate::forward::canonical::CDA_CONTENT_TYPE,
        }
    }
}

impl BenchOptions {
    /// How `serve` runs in the store-backed parts.
    pub fn serve(&self) -> broker::ServeSettings {
        broker::ServeSettings {
            prefetch: self.prefetch,
            publish_canonical: self.publish_canonical,
        }
    }
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Decode + map + check + encode on one thread, beside a bare parse.
    InProcess,
    /// Throughput of `serve` through RabbitMQ, beside the broker baseline.
    EndToEnd,
    /// Latency at fixed offered loads.
    Latency,
    /// Peak RSS of `serve` by message size.
    Rss,
}

/// A store the store-backed parts run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded SQLite file.
    Sqlite,
    /// The PostgreSQL server given by `--postgres`.
    Postgres,
}

/// A subset of the benchmark, for looking at one number without the full run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Parts to run; empty: all.
    pub parts: Vec<Part>,
    /// One store; none: both (SQLite only in a quick run).
    pub store: Option<StoreKind>,
    /// Offered loads of the latency part; empty: the defaults.
    pub rates: Vec<u32>,
}

impl StoreKind {
    /// The store's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

impl Selection {
    fn runs(&self, part: Part) -> bool {
        self.parts.is_empty() || self.parts.contains(&part)
    }

    fn uses_store(&self, store: StoreKind) -> bool {
        self.store.is_none_or(|s| s == store)
    }
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Machine facts.
    pub machine: String,
    /// Deliveries in flight per consumer, the gateway's and the baselines'.
    pub prefetch: u16,
    /// Whether `serve` also published the canonical JSON (a third output per referral).
    pub publish_canonical: bool,
    /// Whose referrals the store-backed parts sent, in turn (`de`, `nl`, `fi`).
    pub referrals: Vec<&'static str>,
    /// The format the store-backed parts sent them in (`fhir-json`, `fhir-xml`, `cda`).
    pub format: &'static str,
    /// In-process rows.
    pub in_process: Vec<inprocess::InProcessRow>,
    /// End-to-end rows.
    pub end_to_end: Vec<broker::EndToEndRow>,
    /// Latency rows.
    pub latency: Vec<broker::LatencyRow>,
    /// Peak RSS of `serve` per message size (MB).
    pub rss_by_size: Vec<(String, f64)>,
    /// Errors of parts that could not run (e.g. no broker).
    pub skipped: Vec<String>,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!(
        "{cpus} cpus, {model}, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// A store made for one run: its SQLite file or PostgreSQL database goes when it is dropped, so
/// repeated runs leave nothing behind.
pub(crate) struct ScratchStore {
    url: String,
    /// The PostgreSQL server's admin URL (for `DROP DATABASE`); none for SQLite.
    admin: Option<String>,
    /// The database's name (PostgreSQL) or file path (SQLite).
    name: String,
}

impl std::ops::Deref for ScratchStore {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchStore {
    fn drop(&mut self) {
        let Some(admin) = self.admin.clone() else {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.name));
            }
            return;
        };
        let name = self.name.clone();
        block_on_own_thread(CLEANUP_BOUND, async move {
            use sqlx::Connection as _;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}

/// How long the bench's cleanups may take.
pub(crate) const CLEANUP_BOUND: Duration = Duration::from_secs(15);

/// Runs `cleanup` to completion (at most `bound`) from a `Drop`: Drop cannot await, and it may
/// run inside a runtime (or one shutting down), so the work gets a thread and a runtime of its
/// own. Used by the bench's and the integration tests' cleanups.
pub fn block_on_own_thread(
    bound: Duration,
    cleanup: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let worker = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let _ = tokio::time::timeout(bound, cleanup).await;
        });
    });
    let _ = worker.join();
}

/// A new SQLite file in the temporary directory.
pub(crate) fn sqlite_url() -> ScratchStore {
    let path = std::env::temp_dir().join(format!(
        "sociogate-bench-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    ScratchStore {
        url: format!("sqlite://{}?mode=rwc", path.display()),
        admin: None,
        name: path.display().to_string(),
    }
}

/// A new PostgreSQL database on the server of `admin` (the URL of a database to connect to
/// for `CREATE DATABASE`).
pub(crate) async fn fresh_postgres(
    admin: &str,
) -> Result<ScratchStore, Box<dyn std::error::Error + Send + Sync>> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    let name = format!(
        "sociogate_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    // Connection options (`?sslmode=disable`, ...) apply to the scratch database too.
    let (path, options) = match admin.split_once('?') {
        Some((path, options)) => (path, format!("?{options}")),
        None => (admin, String::new()),
    };
    let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
    Ok(ScratchStore {
        url: format!("{base}/{name}{options}"),
        admin: Some(admin.to_owned()),
        name,
    })
}

/// A fresh, empty store of `kind` for one run.
async fn scratch_store(
    kind: StoreKind,
    opts: &BenchOptions,
) -> Result<ScratchStore, Box<dyn std::error::Error + Send + Sync>> {
    match (kind, &opts.postgres_url) {
        (StoreKind::Sqlite, _) => Ok(sqlite_url()),
        (StoreKind::Postgres, Some(admin)) => fresh_postgres(admin).await,
        (StoreKind::Postgres, None) => Err("no PostgreSQL server given".into()),
    }
}

/// The jurisdictions whose referrals the store-backed parts send: German unless chosen.
fn referrals(opts: &BenchOptions) -> &[Jurisdiction] {
    if opts.referrals.is_empty() {
        &[Jurisdiction::De]
    } else {
        &opts.referrals
    }
}

/// `n` valid referrals of `size` in `format`, one of each of `referrals` in turn. Each
/// jurisdiction's have a seed of their own, so their message ids differ too.
fn valid(
    seed: u64,
    size: Size,
    n: usize,
    referrals: &[Jurisdiction],
    format: PayloadFormat,
) -> broker::Payloads {
    let each = n.div_ceil(referrals.len().max(1));
    let mut streams: Vec<std::vec::IntoIter<Vec<u8>>> = referrals
        .iter()
        .zip(0u64..)
        .map(|(&jurisdiction, j)| {
            let spec = Spec {
                seed: seed.wrapping_add(j),
                invalid_share: 0.0,
                shared_patients: 0,
                size,
                jurisdiction,
            };
            match format {
                PayloadFormat::FhirJson => workload::generate(spec, each),
                PayloadFormat::FhirXml => workload::to_fhir_xml(&workload::generate(spec, each)),
                PayloadFormat::Cda => workload::generate_cda(spec, each),
            }
            .into_iter()
        })
        .collect();
    let k = streams.len().max(1);
    broker::Payloads {
        bodies: (0..n)
            .filter_map(|i| streams.get_mut(i % k).and_then(Iterator::next))
            .collect(),
        content_type: format.content_type(),
    }
}

/// The in-process part (when selected): decode + map + check + encode outputs on this thread,
/// beside a bare parse of the same bytes.
///
/// Call it before the process starts any other thread (before the async runtime). glibc's
/// allocator takes a cheaper path while a process has one thread, and both sides of the ratio
/// allocate: with the runtime's idle worker threads present, the bare parse (a quarter of its
/// time in malloc and free) ran about a fifth slower and the pipeline about 5 %, so the German
/// plain ratio read 0.54 where the same gateway code measured 0.45 here (2026-12-07, Intel Xeon).
pub fn run_in_process(engine: &Engine, opts: &BenchOptions) -> Vec<inprocess::InProcessRow> {
    let mut rows = Vec::new();
    let selection = &opts.selection;
    let budget = Duration::from_millis(if opts.quick { 900 } else { 3_000 });
    // German referrals in every size (the rows earlier runs are compared with), Dutch and
    // Finnish ones plain: their shapes differ, their sizes grow the same way.
    let workloads = if selection.runs(Part::InProcess) {
        &[
            (Jurisdiction::De, Size::Plain, 200),
            (Jurisdiction::De, Size::Medium, 40),
            (Jurisdiction::De, Size::Large, 8),
            (Jurisdiction::Nl, Size::Plain, 200),
            (Jurisdiction::Fi, Size::Plain, 200),
        ][..]
    } else {
        &[]
    };
    for &(jurisdiction, size, n) in workloads {
        let spec = Spec {
            seed: opts.seed,
            invalid_share: 0.1,
            shared_patients: 0,
            size,
            jurisdiction,
        };
        let json = workload::generate(spec, n);
        // The same referrals as FHIR XML and as CDA: XML decode speed beside the JSON path.
        let xml = workload::to_fhir_xml(&json);
        let cda = workload::generate_cda(spec, n);
        for (format, messages, baseline) in [
            ("fhir-json", &json, Baseline::Json),
            ("fhir-xml", &xml, Baseline::Xml),
            ("cda", &cda, Baseline::Xml),
        ] {
            rows.push(inprocess::measure(
                engine,
                jurisdiction.code(),
                format,
                size.name(),
                messages,
                budget,
                baseline,
            ));
        }
    }

    rows
}

/// Runs the benchmarks; `in_process` are the rows of [`run_in_process`], measured before.
pub async fn run(opts: &BenchOptions, in_process: Vec<inprocess::InProcessRow>) -> Report {
    let mut report = Report {
        machine: machine(),
        in_process,
        end_to_end: Vec::new(),
        latency: Vec::new(),
        rss_by_size: Vec::new(),
        skipped: Vec::new(),
        prefetch: opts.prefetch,
        publish_canonical: opts.publish_canonical,
        referrals: referrals(opts).iter().map(|j| j.code()).collect(),
        format: opts.format.name(),
    };
    let selection = &opts.selection;
    if !(selection.runs(Part::EndToEnd) || selection.runs(Part::Latency)) {
        return run_rss(opts, report).await;
    }
    let mut stores = Vec::new();
    if selection.uses_store(StoreKind::Sqlite) {
        stores.push(StoreKind::Sqlite);
    }
    let postgres_wanted =
        selection.store == Some(StoreKind::Postgres) || (selection.store.is_none() && !opts.quick);
    if postgres_wanted && opts.postgres_url.is_some() {
        stores.push(StoreKind::Postgres);
    }
    if selection.runs(Part::EndToEnd) {
        report = run_end_to_end(opts, &stores, report).await;
    }
    let rates: &[u32] = if !selection.runs(Part::Latency) {
        &[]
    } else if !selection.rates.is_empty() {
        &selection.rates
    } else if opts.quick {
        &[200]
    } else {
        &[200, 500, 1_000]
    };
    let seconds = if opts.quick { 5 } else { 15 };
    let load_at = |rate: u32| {
        valid(
            opts.seed ^ u64::from(rate),
            Size::Plain,
            rate as usize * seconds,
            referrals(opts),
            opts.format,
        )
    };
    // The broker alone at each load first: what the machine allows before any processing.
    for &rate in rates {
        match broker::broker_latency(&opts.amqp_url, &load_at(rate), rate, opts.prefetch).await {
            Ok(row) => report.latency.push(row),
            Err(e) => report.skipped.push(format!("latency broker {rate}/s: {e}")),
        }
    }
    for &kind in &stores {
        let store = kind.name();
        for &rate in rates {
            // A fresh database per load level, so each starts from the same state.
            let url = match scratch_store(kind, opts).await {
                Ok(url) => url,
                Err(e) => {
                    report.skipped.push(format!("latency {store}: {e}"));
                    continue;
                }
            };
            match broker::latency(
                &opts.amqp_url,
                &url,
                store,
                &load_at(rate),
                rate,
                opts.serve(),
            )
            .await
            {
                Ok(row) => report.latency.push(row),
                Err(e) => report
                    .skipped
                    .push(format!("latency {store} {rate}/s: {e}")),
            }
        }
    }
    run_rss(opts, report).await
}

/// Rounds of the end-to-end part in a full run. One round's ratio moves by ±0.05 on this
/// two-core machine (the broker baseline alone ranged 2,600-3,900 msg/s in one hour), so a full
/// run pairs each gateway run with a baseline run just before it and reports the median round.
const END_TO_END_ROUNDS: usize = 3;

/// Throughput of `serve` with each store, beside the broker baseline: per round, the baseline,
/// then the gateway with each store on a fresh database; the round with the median ratio stands
/// for the store, and every round's ratio is kept.
async fn run_end_to_end(opts: &BenchOptions, stores: &[StoreKind], mut report: Report) -> Report {
    let messages = valid(
        opts.seed,
        Size::Plain,
        opts.messages,
        referrals(opts),
        opts.format,
    );
    let rounds = if opts.quick { 1 } else { END_TO_END_ROUNDS };
    let mut measured: Vec<Vec<Round>> = stores.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        let baseline = match broker::broker_baseline(&opts.amqp_url, &messages, opts.prefetch).await
        {
            Ok(rate) => rate,
            Err(e) => {
                report.skipped.push(format!("end-to-end: {e}"));
                break;
            }
        };
        for (&kind, rounds) in stores.iter().zip(&mut measured) {
            let store = kind.name();
            let url = match scratch_store(kind, opts).await {
                Ok(url) => url,
                Err(e) => {
                    report.skipped.push(format!("end-to-end {store}: {e}"));
                    continue;
                }
            };
            match broker::gateway_throughput(&opts.amqp_url, &url, store, &messages, opts.serve())
                .await
            {
                Ok((gateway, rss)) => rounds.push(Round {
                    gateway,
                    baseline,
                    rss,
                }),
                Err(e) => report.skipped.push(format!("end-to-end {store}: {e}")),
            }
        }
    }
    for (kind, rounds) in stores.iter().zip(measured) {
        report
            .end_to_end
            .extend(median_round(kind.name(), messages.len(), rounds));
    }
    report
}

/// One end-to-end round of one store: the gateway's rate, the baseline's just before it, and
/// `serve`'s peak RSS.
struct Round {
    gateway: f64,
    baseline: f64,
    rss: f64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.gateway / self.baseline
    }
}

/// The row of the round with the median ratio (the upper one of an even count), every round's
/// ratio in the order they ran, and the highest RSS of them all; none without rounds.
fn median_round(
    store: &str,
    messages: usize,
    mut rounds: Vec<Round>,
) -> Option<broker::EndToEndRow> {
    let round_ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    let peak_rss_mb = rounds.iter().map(|r| r.rss).fold(0.0, f64::max);
    rounds.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    let median = rounds.get(rounds.len() / 2)?;
    Some(broker::EndToEndRow {
        store: store.to_owned(),
        messages,
        gateway_msgs_per_s: median.gateway,
        baseline_msgs_per_s: median.baseline,
        ratio: median.ratio(),
        round_ratios,
        peak_rss_mb,
    })
}

/// Peak RSS of `serve` by message size (SQLite store).
async fn run_rss(opts: &BenchOptions, mut report: Report) -> Report {
    if !opts.selection.runs(Part::Rss) {
        return report;
    }
    let sizes: &[(Size, usize)] = if opts.quick {
        &[(Size::Plain, 500), (Size::Large, 100)]
    } else {
        &[
            (Size::Plain, 2_000),
            (Size::Medium, 1_000),
            (Size::Large, 300),
        ]
    };
    for &(size, n) in sizes {
        match broker::gateway_throughput(
            &opts.amqp_url,
            &sqlite_url(),
            "sqlite",
            &valid(opts.seed, size, n, referrals(opts), opts.format),
            opts.serve(),
        )
        .await
        {
            Ok((_, rss)) => report
                .rss_by_size
                .push((format!("{} x {n}", size.name()), rss)),
            Err(e) => report.skipped.push(format!("rss {}: {e}", size.name())),
        }
    }
    report
}

/// The human table: one section per part that produced rows.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "machine: {}\nreferrals sent through serve: {} as {}\n",
        report.machine,
        report.referrals.join(", "),
        report.format
    );
    if !report.in_process.is_empty() {
        out.push_str("\nIn-process (one thread), pipeline = decode+map+check+encode outputs, baseline = serde_json::from_slice::<Value> (JSON) or a quick-xml read of every event (XML); decode/s and check/s: the first stages alone; decode ratio = decode/s / baseline, the ceiling of ratio\n");
        out.push_str(
            "referrals  format     size   bytes    pipeline msg/s  MB/s    baseline msg/s  MB/s    ratio   decode/s  check/s  decode ratio\n",
        );
    }
    for r in &report.in_process {
        out.push_str(&format!(
            "{:<10} {:<10} {:<6} {:>7}  {:>14.0} {:>6.1}  {:>14.0} {:>6.1}  {:>5.2}  {:>8.0} {:>8.0}  {:>12.2}\n",
            r.jurisdiction,
            r.format,
            r.size,
            r.bytes,
            r.pipeline_msgs_per_s,
            r.pipeline_mb_per_s,
            r.baseline_msgs_per_s,
            r.baseline_mb_per_s,
            r.ratio,
            r.decode_msgs_per_s,
            r.check_msgs_per_s,
            r.decode_ratio
        ));
    }
    if !report.end_to_end.is_empty() {
        let outputs = if report.publish_canonical {
            "three outputs per referral (canonical JSON on)"
        } else {
            "two outputs per referral"
        };
        out.push_str(&format!("\nEnd-to-end through RabbitMQ (persistent, confirms, manual acks, prefetch {}, {outputs}); baseline = same messages relayed twice without processing\n", report.prefetch));
        out.push_str(
            "store      messages  gateway msg/s  baseline msg/s  ratio  rounds       peak RSS MB\n",
        );
    }
    for r in &report.end_to_end {
        let low = r.round_ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = r.round_ratios.iter().copied().fold(0.0, f64::max);
        let rounds = format!("{}: {low:.2}-{high:.2}", r.round_ratios.len());
        out.push_str(&format!(
            "{:<10} {:>8}  {:>13.0}  {:>14.0}  {:>5.2}  {:<12} {:>11.1}\n",
            r.store,
            r.messages,
            r.gateway_msgs_per_s,
            r.baseline_msgs_per_s,
            r.ratio,
            rounds,
            r.peak_rss_mb
        ));
    }
    if !report.latency.is_empty() {
        out.push_str("\nLatency, open loop, scheduled send -> provider output (ms); store broker = the baseline relay alone, send -> second hop's output\n");
        out.push_str(
            "store      offered/s  messages     p50     p95     p99     max  peak RSS MB\n",
        );
    }
    for r in &report.latency {
        out.push_str(&format!(
            "{:<10} {:>9}  {:>8}  {:>6.1}  {:>6.1}  {:>6.1}  {:>6.1}  {:>11.1}\n",
            r.store,
            r.offered_per_s,
            r.messages,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.max_ms,
            r.peak_rss_mb
        ));
    }
    if !report.rss_by_size.is_empty() {
        out.push_str("\nPeak RSS of serve by message size\n");
    }
    for (what, mb) in &report.rss_by_size {
        out.push_str(&format!("{what:<16} {mb:>8.1} MB\n"));
    }
    for s in &report.skipped {
        out.push_str(&format!("\nskipped: {s}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_with_the_median_ratio_stands_for_the_store() {
        let round = |gateway, baseline, rss| Round {
            gateway,
            baseline,
            rss,
        };
        // Ratios 0.40, 0.55, 0.50: the median is the third round, not the middle one in time,
        // and not the fastest gateway run (the second).
        let Some(row) = median_round(
            "postgres",
            20_000,
            vec![
                round(1_200.0, 3_000.0, 55.0),
                round(1_650.0, 3_000.0, 61.0),
                round(1_400.0, 2_800.0, 52.0),
            ],
        ) else {
            panic!("three rounds give a row");
        };
        assert_eq!(row.gateway_msgs_per_s, 1_400.0);
        assert_eq!(row.baseline_msgs_per_s, 2_800.0);
        assert!((row.ratio - 0.5).abs() < 1e-12);
        let ratios: Vec<String> = row.round_ratios.iter().map(|r| format!("{r:.2}")).collect();
        assert_eq!(ratios, ["0.40", "0.55", "0.50"]);
        assert_eq!(row.peak_rss_mb, 61.0);
        assert!(median_round("sqlite", 10, Vec::new()).is_none());
    }

    #[test]
    fn the_in_process_table_shows_the_decode_ratio_beside_the_pipeline_ratio() {
        let row = inprocess::InProcessRow {
            jurisdiction: "nl",
            format: "fhir-json",
            size: "plain",
            bytes: 7_000,
            pipeline_msgs_per_s: 9_000.0,
            pipeline_mb_per_s: 63.0,
            baseline_msgs_per_s: 24_000.0,
            baseline_mb_per_s: 168.0,
            ratio: 0.375,
            decode_msgs_per_s: 12_960.0,
            check_msgs_per_s: 11_000.0,
            decode_ratio: 0.54,
        };
        let report = Report {
            machine: "test".to_owned(),
            prefetch: 64,
            publish_canonical: false,
            referrals: vec!["de"],
            format: "fhir-json",
            in_process: vec![row],
            end_to_end: Vec::new(),
            latency: Vec::new(),
            rss_by_size: Vec::new(),
            skipped: Vec::new(),
        };
        let text = table(&report);
        let header = text
            .lines()
            .find(|l| l.starts_with("referrals  format"))
            .unwrap_or_default();
        assert!(header.trim_end().ends_with("decode ratio"), "{header}");
        let line = text
            .lines()
            .find(|l| l.starts_with("nl "))
            .unwrap_or_default();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[8], "0.38", "{line}");
        assert_eq!(cells.last().copied(), Some("0.54"), "{line}");
    }

    /// `--format` sends the same kind of referrals as FHIR XML or CDA, each with its media type
    /// as the AMQP `content-type`, and every one of them is accepted (the runs wait for the
    /// outputs of each).
    #[test]
    fn the_store_backed_parts_send_accepted_referrals_in_the_chosen_format() {
        use crate::decode::{Format, Limits, sniff};
        use crate::pipeline::{Engine, Inbound};
        let engine =
            match Engine::load(&crate::mappings::Mappings::default_dir(), Limits::default()) {
                Ok(engine) => engine,
                Err(e) => panic!("mappings must load: {e}"),
            };
        let today = time::macros::date!(2026 - 11 - 15);
        for (format, content_type, decoded_as) in [
            (
                PayloadFormat::FhirJson,
                "application/fhir+json",
                Format::FhirJson,
            ),
            (
                PayloadFormat::FhirXml,
                "application/fhir+xml",
                Format::FhirXml,
            ),
            (PayloadFormat::Cda, "application/hl7-cda+xml", Format::Cda),
        ] {
            let payloads = valid(5, Size::Plain, 6, &Jurisdiction::ALL, format);
            assert_eq!(payloads.len(), 6, "{format:?}");
            assert_eq!(payloads.content_type, content_type);
            for (i, body) in payloads.bodies.iter().enumerate() {
                assert_eq!(
                    sniff(body, Some(content_type)).ok(),
                    Some(decoded_as),
                    "{format:?} {i}"
                );
                let inbound = Inbound {
                    bytes: body,
                    content_type: Some(content_type),
                    message_id: None,
                    jurisdiction: None,
                };
                let mut ledger = crate::store::ledger::MemoryLedger::default();
                match engine.process(inbound, &mut ledger, today) {
                    Ok(processed) => assert_eq!(
                        processed.verdict,
                        crate::check::Verdict::Accepted,
                        "{format:?} {i}: {:?}",
                        processed.issues
                    ),
                    Err(e) => panic!("{format:?} {i}: {e}"),
                }
            }
        }
    }

    /// `--canonical` runs `serve` with its default of publishing the canonical JSON: the run
    /// then waits for three outputs per referral, and the table says which it measured.
    #[test]
    fn the_end_to_end_table_says_how_many_outputs_each_referral_made() {
        let settings = |publish_canonical| broker::ServeSettings {
            prefetch: 64,
            publish_canonical,
        };
        assert_eq!(settings(false).outputs_per_referral(), 2);
        assert_eq!(settings(true).outputs_per_referral(), 3);
        let header = |publish_canonical| {
            let one = Round {
                gateway: 1_000.0,
                baseline: 2_000.0,
                rss: 50.0,
            };
            let Some(row) = median_round("sqlite", 2_000, vec![one]) else {
                panic!("one round gives a row");
            };
            let report = Report {
                machine: "test".to_owned(),
                prefetch: 64,
                publish_canonical,
                referrals: vec!["de"],
                format: "fhir-json",
                in_process: Vec::new(),
                end_to_end: vec![row],
                latency: Vec::new(),
                rss_by_size: Vec::new(),
                skipped: Vec::new(),
            };
            table(&report)
                .lines()
                .find(|l| l.starts_with("End-to-end"))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header(false).contains("prefetch 64, two outputs per referral)"),
            "{}",
            header(false)
        );
        assert!(
            header(true).contains("prefetch 64, three outputs per referral (canonical JSON on))"),
            "{}",
            header(true)
        );
    }

    #[test]
    fn the_store_backed_parts_send_the_chosen_jurisdictions_in_turn() {
        let resource_of = |message: &[u8], kind: &str| -> serde_json::Value {
            let bundle: serde_json::Value = serde_json::from_slice(message).unwrap_or_default();
            bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["resource"].clone())
                .find(|r| r["resourceType"] == kind)
                .unwrap_or_default()
        };
        let mixed = valid(
            9,
            Size::Plain,
            7,
            &Jurisdiction::ALL,
            PayloadFormat::FhirJson,
        );
        assert_eq!(mixed.len(), 7);
        assert_eq!(mixed.content_type, "application/fhir+json");
        let systems: Vec<String> = mixed
            .bodies
            .iter()
            .map(|m| {
                let patient = resource_of(m, "Patient");
                patient["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["system"].as_str())
                    .find(|s| {
                        s.contains("kvid") || s.ends_with("/bsn") || s.ends_with("1.2.246.21")
                    })
                    .unwrap_or("none")
                    .to_owned()
            })
            .collect();
        for (i, system) in systems.iter().enumerate() {
            let expected = ["kvid", "/bsn", "1.2.246.21"][i % 3];
            assert!(system.contains(expected), "message {i}: {system}");
        }
        let ids: std::collections::HashSet<String> = mixed
            .bodies
            .iter()
            .map(|m| {
                let bundle: serde_json::Value = serde_json::from_slice(m).unwrap_or_default();
                bundle["identifier"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 7, "every message has an id of its own");
        // German alone is the workload of the earlier runs, message for message.
        let german = Spec {
            seed: 9,
            invalid_share: 0.0,
            shared_patients: 0,
            size: Size::Plain,
            jurisdiction: Jurisdiction::De,
        };
        assert_eq!(
            valid(
                9,
                Size::Plain,
                4,
                &[Jurisdiction::De],
                PayloadFormat::FhirJson
            )
            .bodies,
            workload::generate(german, 4)
        );
    }
}
