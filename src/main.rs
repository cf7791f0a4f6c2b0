//! The `sociogate` command.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sociogate::check::Verdict;
use sociogate::decode::{DecodeError, Limits};
use sociogate::intake::file;
use sociogate::mappings::Mappings;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
