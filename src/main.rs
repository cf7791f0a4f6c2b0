//! The `sociogate` command.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sociogate::check::Verdict;
use sociogate::config::AmqpConfig;
use sociogate::decode::{DecodeError, Limits};
use sociogate::intake::file;
use sociogate::mappings::Mappings;
use sociogate::model::Jurisdiction;
use sociogate::pipeline::{Engine, Inbound, Processed};
use sociogate::store::ledger::MemoryLedger;
use time::Date;

#[derive(Parser)]
#[command(
    name = "sociogate",
    version,
    about = "Interoperability gateway for sociotherapy referrals"
)]
struct Cli {
    /// Folder with the rule and code mappings (default: $SOCIOGATE_MAPPINGS, ./mappings, or the
    /// source tree's copy).
    #[arg(long, global = true)]
    mappings: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode, map and check referrals; one verdict per file.
    ///
    /// Exit status: 0 all accepted, 1 any rejected, 2 any unreadable or a usage error.
    Check {
        /// Evaluate date and age rules as of this day (YYYY-MM-DD) instead of today.
        #[arg(long, value_parser = parse_date)]
        at: Option<Date>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Language of the messages (en, de); English is the fallback.
        #[arg(long, default_value = "en")]
        lang: String,
        /// Files or directories (every file below a directory is checked).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the canonical referral of one file as JSON.
    Translate {
        /// The file.
        path: PathBuf,
    },
    /// Run the gateway: RabbitMQ and HTTP intake, store, forwarding.
    ///
    /// Works with nothing configured: an embedded SQLite file, the local RabbitMQ if one answers
    /// (else HTTP only), HTTP on 127.0.0.1:8080.
    Serve {
        /// TOML configuration file (see docker/sociogate.toml); SOCIOGATE_* variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Measure throughput, latency and memory beside baselines in the same run (BENCHMARKS.md).
    Bench {
        /// Finish in under two minutes: fewer messages, SQLite only, one load level.
        #[arg(long)]
        quick: bool,
        /// Print every figure as JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Workload seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Messages for the end-to-end run (default 20,000; 2,000 with --quick).
        #[arg(long)]
        messages: Option<usize>,
        /// PostgreSQL server for the PostgreSQL runs (a fresh database is created per run).
        /// Without TLS by default, like the broker's AMQP link the baseline uses and the
        /// docker compose deployment; Debian's PostgreSQL offers TLS even on loopback.
        #[arg(
            long,
            env = "BENCH_POSTGRES_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
        )]
        postgres: String,
        /// Run only these parts (repeatable): in-process, end-to-end, latency, rss. Default: all.
        #[arg(long = "part", value_enum)]
        parts: Vec<sociogate::bench::Part>,
        /// Run the store-backed parts only with this store. Default: both (SQLite only with
        /// --quick).
        #[arg(long, value_enum)]
        store: Option<sociogate::bench::StoreKind>,
        /// Offered loads of the latency part, msg/s (repeatable). Default: 200, 500, 1000
        /// (200 with --quick).
        #[arg(long = "rate")]
        rates: Vec<u32>,
        /// Deliveries in flight per consumer, for `serve` (`amqp.prefetch`) and for the broker
        /// baselines alike, at least 1. Default: `serve`'s default.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        prefetch: Option<u16>,
        /// Whose referrals the end-to-end, latency and memory parts send (repeatable, taken in
        /// turn): de, nl, fi. Default: de. The in-process part always measures all three.
        #[arg(long = "referrals", value_parser = parse_jurisdiction)]
        referrals: Vec<Jurisdiction>,
        /// `serve` also publishes the canonical JSON for providers (`amqp.publish_canonical`,
        /// its default): three outputs per accepted referral instead of two. Off by default,
        /// as in every run of BENCHMARKS.md.
        #[arg(long)]
        canonical: bool,
        /// The format the end-to-end, latency and memory parts send the referrals in. The
        /// in-process part always measures all three.
        #[arg(long, value_enum, default_value = "fhir-json")]
        format: sociogate::bench::PayloadFormat,
    },
    /// Reprocess stored messages by gateway id (or all with a status) through the pipeline; the
    /// outputs go to the outbox, which a running `serve` relays.
    Replay {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Replay every stored message with this status (e.g. dead, unreadable).
        #[arg(long)]
        status: Option<String>,
        /// Gateway ids.
        ids: Vec<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

fn parse_date(s: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, format).map_err(|e| format!("{s:?} is not a date YYYY-MM-DD: {e}"))
}

fn parse_jurisdiction(s: &str) -> Result<Jurisdiction, String> {
    Jurisdiction::from_code(&s.to_ascii_lowercase())
        .ok_or_else(|| format!("{s:?} is not one of de, nl, fi"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve { config, log_json } = &cli.command {
        sociogate::telemetry::init_logs(*log_json);
        sociogate::telemetry::init_panic_log();
        return match serve(config.as_deref(), cli.mappings.clone()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("sociogate: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Bench {
        quick,
        json,
        seed,
        messages,
        postgres,
        parts,
        store,
        rates,
        prefetch,
        referrals,
        canonical,
        format,
    } = &cli.command
    {
        let amqp = AmqpConfig::default();
        let opts = sociogate::bench::BenchOptions {
            quick: *quick,
            seed: *seed,
            amqp_url: std::env::var("AMQP_URL").unwrap_or(amqp.url),
            postgres_url: Some(postgres.clone()).filter(|p| !p.is_empty()),
            messages: messages.unwrap_or(if *quick { 2_000 } else { 20_000 }),
            prefetch: prefetch.unwrap_or(amqp.prefetch),
            publish_canonical: *canonical,
            selection: sociogate::bench::Selection {
                parts: parts.clone(),
                store: *store,
                rates: rates.clone(),
            },
            referrals: referrals.clone(),
            format: *format,
        };
        return match bench(cli.mappings.clone(), *json, &opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sociogate: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Replay {
        config,
        status,
        ids,
    } = &cli.command
    {
        sociogate::telemetry::init_logs(false);
        return match replay(
            config.as_deref(),
            cli.mappings.clone(),
            status.as_deref(),
            ids,
        ) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("sociogate: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    sociogate::telemetry::init_command_logs();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sociogate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = cli.mappings.unwrap_or_else(Mappings::default_dir);
    let engine = Engine::load(&dir, Limits::default())
        .with_context(|| format!("loading mappings from {}", dir.display()))?;
    match cli.command {
        Command::Check {
            at,
            format,
            lang,
            paths,
        } => check(&engine, at, format, &lang, &paths),
        Command::Translate { path } => translate(&engine, &path),
        Command::Serve { .. } | Command::Replay { .. } | Command::Bench { .. } => {
            Ok(ExitCode::from(2))
        }
    }
}

/// Reads one file into a processed result, refusing oversized files by their size alone.
fn read_input(engine: &Engine, path: &Path) -> Result<Vec<u8>, Box<Processed>> {
    let limit = engine.limits().max_bytes;
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > limit as u64 => {
            let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
            Err(Box::new(
                engine.undecodable(&DecodeError::TooLarge { size, limit }),
            ))
        }
        Ok(_) => file::read_capped(path, limit)
            .map_err(|e| Box::new(engine.unreadable("GW-IN-01", &e.to_string()))),
        Err(e) => Err(Box::new(engine.unreadable("GW-IN-01", &e.to_string()))),
    }
}

fn check(
    engine: &Engine,
    at: Option<Date>,
    format: OutputFormat,
    lang: &str,
    paths: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let today = at.unwrap_or_else(|| time::OffsetDateTime::now_utc().date());
    let files = file::expand(paths);
    let any_dir = paths.iter().any(|p| p.is_dir());
    let progress = (any_dir && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut ledger = MemoryLedger::default();
    let mut worst = Verdict::Accepted;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in &files {
        let processed = match read_input(engine, path) {
            Ok(bytes) => {
                let inbound = Inbound {
                    bytes: &bytes,
                    content_type: file::content_type_of(path),
                    message_id: None,
                    jurisdiction: None,
                };
                engine
                    .process(inbound, &mut ledger, today)
                    .map_err(|e| anyhow::anyhow!(e))?
            }
            Err(unreadable) => *unreadable,
        };
        worst = match (worst, processed.verdict) {
            (_, Verdict::Unreadable) | (Verdict::Unreadable, _) => Verdict::Unreadable,
            (_, Verdict::Rejected) | (Verdict::Rejected, _) => Verdict::Rejected,
            _ => Verdict::Accepted,
        };
        let shown = path.display().to_string();
        match format {
            OutputFormat::Json => {
                let line = serde_json::json!({
                    "file": shown,
                    "verdict": processed.verdict.as_str(),
                    "referral": processed.referral,
                    "outcome": engine.outcome(&processed, lang).to_json(),
                });
                writeln!(out, "{line}")?;
            }
            OutputFormat::Text => {
                writeln!(out, "{shown}: {}", processed.verdict.as_str())?;
                for issue in &processed.issues {
                    let at = if issue.expression.is_empty() {
                        String::new()
                    } else {
                        format!(" @ {}", issue.expression)
                    };
                    writeln!(
                        out,
                        "  {:<11} {:<9} {}{at}",
                        issue.severity.as_str(),
                        issue.code,
                        issue.message(engine.mappings().rules(), lang)
                    )?;
                }
            }
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(match worst {
        Verdict::Accepted => ExitCode::SUCCESS,
        Verdict::Rejected => ExitCode::from(1),
        Verdict::Unreadable => ExitCode::from(2),
    })
}

fn translate(engine: &Engine, path: &Path) -> anyhow::Result<ExitCode> {
    let processed = match read_input(engine, path) {
        Ok(bytes) => engine.translate(Inbound {
            bytes: &bytes,
            content_type: file::content_type_of(path),
            message_id: None,
            jurisdiction: None,
        }),
        Err(unreadable) => *unreadable,
    };
    match &processed.referral {
        Some(referral) => {
            println!("{}", serde_json::to_string_pretty(referral)?);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&engine.outcome(&processed, "en").to_json())?
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn load_config(
    path: Option<&Path>,
    mappings: Option<PathBuf>,
) -> anyhow::Result<sociogate::config::Config> {
    let mut config = sociogate::config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if mappings.is_some() {
        config.pipeline.mappings = mappings;
    }
    Ok(config)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(config: Option<&Path>, mappings: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(config, mappings)?;
    runtime()?.block_on(async move {
        let running = sociogate::app::start(config).await?;
        sociogate::app::termination_signal().await;
        tracing::info!("Shutting down: finishing in-flight messages");
        running.shutdown().await;
        tracing::info!("Stopped");
        Ok(())
    })
}

fn replay(
    config: Option<&Path>,
    mappings: Option<PathBuf>,
    status: Option<&str>,
    ids: &[String],
) -> anyhow::Result<ExitCode> {
    let config = load_config(config, mappings)?;
    if ids.is_empty() && status.is_none() {
        anyhow::bail!("name gateway ids or --status");
    }
    runtime()?.block_on(async move {
        let store = sociogate::store::Store::connect(
            &config.store.database_url,
            config.store.max_connections,
        )
        .await?;
        let dir = config
            .pipeline
            .mappings
            .clone()
            .unwrap_or_else(Mappings::default_dir);
        let engine = Engine::load(&dir, config.limits())?;
        let gateway = sociogate::pipeline::gateway::Gateway::new(
            std::sync::Arc::new(engine),
            store.clone(),
            config.amqp.clone(),
            &config.pipeline.default_language,
        );
        let mut targets: Vec<String> = ids.to_vec();
        if let Some(status) = status {
            targets.extend(store.message_ids_with_status(status, 100_000).await?);
        }
        let mut missing = false;
        for id in targets {
            let Some(stored) = store.load_message(&id).await? else {
                eprintln!("{id}: not stored");
                missing = true;
                continue;
            };
            let envelope = sociogate::pipeline::gateway::Envelope {
                channel: "replay",
                body: stored.body.into(),
                content_type: stored.content_type,
                // A replay is a new message: its own idempotency key, the original correlation.
                message_id: Some(format!("replay:{}:{}", stored.id, uuid::Uuid::now_v7())),
                correlation_id: stored.correlation_id.or(stored.message_id),
                reply_to: stored.reply_to,
                language: None,
                headers: serde_json::from_str(&stored.headers).unwrap_or_default(),
                jurisdiction: None,
            };
            match gateway.handle(&envelope).await? {
                sociogate::pipeline::gateway::Handled::New {
                    gateway_id,
                    verdict,
                    ..
                } => {
                    println!("{id}: replayed as {gateway_id}: {}", verdict.as_str());
                }
                sociogate::pipeline::gateway::Handled::Duplicate { gateway_id, .. } => {
                    println!("{id}: already replayed as {gateway_id}");
                }
            }
        }
        store.close().await;
        Ok(if missing {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn bench(
    mappings: Option<PathBuf>,
    json: bool,
    opts: &sociogate::bench::BenchOptions,
) -> anyhow::Result<()> {
    let dir = mappings.unwrap_or_else(Mappings::default_dir);
    let engine = Engine::load(&dir, Limits::default())?;
    // Before the runtime: the in-process part wants a process with one thread (see there).
    let in_process = sociogate::bench::run_in_process(&engine, opts);
    let report = runtime()?.block_on(sociogate::bench::run(opts, in_process));
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", sociogate::bench::table(&report));
    }
    Ok(())
}
