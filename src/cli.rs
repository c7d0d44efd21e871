//! The command line: clap derive structs, and the one place where their strings become a
//! validated [`Config`] for the stages.

use crate::discover::{DiscoverOptions, LogKind};
use crate::filter::Filter;
use crate::gen::{parse_size, GenFamily, GenOptions, NsgVersion};
use crate::parse::ParseOptions;
use crate::pipeline::RunOptions;
use crate::text::parse_time_bound;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  everything read was used
  1  nothing usable was read (no blobs found, or no record parsed)
  2  usage error
  3  finished, but some input was rejected or failed (see stderr and the ledger)";

#[derive(Parser, Debug)]
#[command(
    name = "nsgflow",
    version,
    about = "Azure NSG and VNet flow logs into answers: who talked to whom, which rule decided, what was skipped.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The ledger (what was read, rejected, skipped) and counters per NSG rule.
    #[command(after_help = EXIT_CODES)]
    Summary(SummaryArgs),
    /// Write a realistic synthetic flow-log container (for demos, tests, benchmarks).
    Gen(GenArgs),
}

/// Output format of `summary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `--family`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    Nsg,
    Vnet,
}

#[derive(Args, Debug)]
pub struct InputArgs {
    /// Container folders as azcopy downloads them, folders above or inside one, or blob files.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Only tuples at or after this time: RFC 3339 (2026-01-05T13:00:00Z) or a date (UTC).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only tuples before this time: RFC 3339 or a date (UTC).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this NSG (name, case-insensitive; repeatable).
    #[arg(long, value_name = "NAME")]
    pub nsg: Vec<String>,
    /// Only this subscription id (case-insensitive; repeatable).
    #[arg(long, value_name = "ID")]
    pub subscription: Vec<String>,
    /// Only NSG flow logs or only VNet flow logs.
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,
    /// Drop exact duplicate records and tuples (within a blob, rule and NIC/ACL). Duplicates
    /// are counted in the ledger either way.
    #[arg(long)]
    pub dedup: bool,
    /// Stop at the first rejected tuple or failed blob.
    #[arg(long)]
    pub strict: bool,
    /// Follow symbolic links while walking folders.
    #[arg(long)]
    pub follow_links: bool,
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GenFamilyArg {
    Nsg,
    Vnet,
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NsgVersionArg {
    #[value(name = "1")]
    V1,
    #[value(name = "2")]
    V2,
    Mixed,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    /// Folder to write the container tree into (created if missing).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Seed: the same seed writes byte-identical files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Which flow logs to write; `mixed` is a migration with one overlapping hour.
    #[arg(long, value_enum, default_value_t = GenFamilyArg::Nsg)]
    pub family: GenFamilyArg,
    /// NSG flow-log version (`mixed`: the first NSG writes v1).
    #[arg(long, value_enum, default_value_t = NsgVersionArg::V2)]
    pub nsg_version: NsgVersionArg,
    /// Number of NSGs.
    #[arg(long, default_value_t = 3)]
    pub nsgs: usize,
    /// NICs per NSG.
    #[arg(long, default_value_t = 2)]
    pub nics_per_nsg: usize,
    /// Hours of logs.
    #[arg(long, default_value_t = 2)]
    pub hours: usize,
    /// First hour (RFC 3339 or date, UTC).
    #[arg(long, default_value = "2026-01-05")]
    pub start: String,
    /// New connections per NIC per minute.
    #[arg(long, default_value_t = 6.0)]
    pub flows_per_minute: f64,
    /// Approximate total size (e.g. 1G, 200M); overrides --flows-per-minute.
    #[arg(long)]
    pub size: Option<String>,
}

/// Validated configuration for a run over inputs.
#[derive(Clone, Debug)]
pub struct InputConfig {
    pub inputs: Vec<PathBuf>,
    pub discover: DiscoverOptions,
    pub run: RunOptions,
    /// Worker threads; `None` = rayon's default (one per core).
    pub threads: Option<usize>,
}

/// What `main` hands to `app::run`.
#[derive(Clone, Debug)]
pub enum Config {
    Summary { input: InputConfig, format: Format },
    Gen(GenOptions),
}

impl InputArgs {
    pub fn to_config(&self) -> Result<InputConfig, String> {
        let since_ms = self.since.as_deref().map(parse_time_bound).transpose()?;
        let until_ms = self.until.as_deref().map(parse_time_bound).transpose()?;
        if let (Some(s), Some(u)) = (since_ms, until_ms) {
            if s >= u {
                return Err("--since must be before --until".to_string());
            }
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".to_string());
        }
        let kind = self.family.map(|f| match f {
            FamilyArg::Nsg => LogKind::Nsg,
            FamilyArg::Vnet => LogKind::Vnet,
        });
        Ok(InputConfig {
            inputs: self.inputs.clone(),
            discover: DiscoverOptions {
                follow_links: self.follow_links,
                since_ms,
                until_ms,
                nsgs: self.nsg.clone(),
                subscriptions: self.subscription.clone(),
                kind,
            },
            run: RunOptions {
                parse: ParseOptions { dedup: self.dedup },
                filter: Filter {
                    since_ms,
                    until_ms,
                    nsgs: self.nsg.clone(),
                    subscriptions: self.subscription.clone(),
                    kind,
                },
                strict: self.strict,
            },
            threads: self.threads,
        })
    }
}

impl Cli {
    /// The single boundary from strings to typed configuration.
    pub fn to_config(&self) -> Result<Config, String> {
        match &self.command {
            Command::Summary(a) => Ok(Config::Summary {
                input: a.input.to_config()?,
                format: a.format,
            }),
            Command::Gen(g) => {
                let start_ms = parse_time_bound(&g.start)?;
                let size = g.size.as_deref().map(parse_size).transpose()?;
                if !(g.flows_per_minute.is_finite() && g.flows_per_minute >= 0.0) {
                    return Err("--flows-per-minute must be a non-negative number".to_string());
                }
                Ok(Config::Gen(GenOptions {
                    out: g.out.clone(),
                    seed: g.seed,
                    family: match g.family {
                        GenFamilyArg::Nsg => GenFamily::Nsg,
                        GenFamilyArg::Vnet => GenFamily::Vnet,
                        GenFamilyArg::Mixed => GenFamily::Mixed,
                    },
                    nsg_version: match g.nsg_version {
                        NsgVersionArg::V1 => NsgVersion::V1,
                        NsgVersionArg::V2 => NsgVersion::V2,
                        NsgVersionArg::Mixed => NsgVersion::Mixed,
                    },
                    nsgs: g.nsgs,
                    nics_per_nsg: g.nics_per_nsg,
                    hours: g.hours,
                    start_ms,
                    flows_per_minute: g.flows_per_minute,
                    size,
                }))
            }
        }
    }
}
