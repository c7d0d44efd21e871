//! The command line: clap derive structs, and the one place where their strings become a
//! validated [`Config`] for the stages.

use crate::addr::{AddressBook, Grouping};
pub use crate::aggregate::connections::ConnMetric;
use crate::aggregate::graph::Weight;
use crate::aggregate::timeline::parse_bin;
use crate::aggregate::top::{Metric, TopBy, TopSpec};
use crate::detect::{DetectConfig, Severity};
use crate::discover::{DiscoverOptions, LogKind, Shard};
use crate::export::RowFormat;
use crate::filter::{parse_net, parse_protocol, Filter};
use crate::gen::{parse_size, GenFamily, GenOptions, NsgVersion};
use crate::model::{Decision, Direction, FlowState};
use crate::parse::ParseOptions;
use crate::pipeline::RunOptions;
use crate::text::parse_time_bound;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The exit codes, as a literal for `concat!` in the subcommands' help.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0  everything read was used
  1  nothing usable was read (no blobs found, no record parsed, or no tuple matched the filters)
  2  usage or environment error (bad flag value, unusable output location, a write that
     failed, partial files that cannot be merged)
  3  finished, but some input was rejected or failed (see stderr and the ledger)
  4  --fail-on: a finding at or above the given severity (anomalies, report, audit)"
    };
}

pub const EXIT_CODES: &str = exit_codes!();

/// A subcommand's `after_help`: its examples (each line starting `  nsgflow ` is checked
/// to parse, by a test), then the exit codes.
macro_rules! examples {
    ($($line:literal)+) => {
        concat!("Examples:\n", $("  ", $line, "\n",)+ "\n", exit_codes!())
    };
}

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
    /// The main job: read the input once and write index.html, report.json, report.md, CSV
    /// tables and SVG charts into a folder.
    #[command(after_help = examples!("nsgflow report ./flowlogs -o weekly --last week" "nsgflow report ./flowlogs -o out --labels nets.csv --rules nsgs.json --fail-on high" "nsgflow report ./flowlogs -o out --since 2026-01-05 --until 2026-01-12 --title \"Week 2\"" "nsgflow report ./flowlogs -o part-a --shard 1/4 --save-partial a.part"))]
    Report(ReportArgs),
    /// Findings: port scans, sweeps, exfiltration, beacons, new talkers, denied spikes,
    /// lateral movement and exposed admin ports, each with its method, value, threshold and
    /// evidence.
    #[command(after_help = examples!("nsgflow anomalies ./flowlogs --since 7d --min-severity medium" "nsgflow anomalies ./flowlogs --baseline last-week.part --format json" "nsgflow anomalies ./flowlogs --config detect.toml --fail-on high"))]
    Anomalies(AnomaliesArgs),
    /// Rule hygiene: hits per defined rule, and unused, redundant, shadowed, overly
    /// permissive, unresolvable and undefined rules, from NSG definitions and the logs.
    #[command(after_help = examples!("nsgflow audit ./flowlogs --rules nsgs.json" "nsgflow audit ./flowlogs --rules nsgs.json --format csv --fail-on medium"))]
    Audit(AuditArgs),
    /// The ledger (what was read, rejected, skipped) and counters per NSG rule.
    #[command(after_help = examples!("nsgflow summary ./flowlogs" "nsgflow summary ./flowlogs --nsg app-nsg --since now-24h --format json" "nsgflow summary ./flowlogs --rejects rejects.ndjson --strict"))]
    Summary(SummaryArgs),
    /// The top N sources, destinations, pairs, ports, rules, NSGs, NICs, flow classes or
    /// connections by a metric.
    #[command(after_help = examples!("nsgflow top ./flowlogs --by dst --metric bytes --direction out" "nsgflow top ./flowlogs --by dport --decision deny -n 20" "nsgflow top ./flowlogs --by src --group prefix/24 --format csv"))]
    Top(TopArgs),
    /// Export matching tuples, one row each (CSV with a header, or JSON lines).
    #[command(after_help = examples!("nsgflow flows ./flowlogs --src 10.0.1.4 --port 443 --blob-list blobs.csv > flows.csv" "nsgflow flows ./flowlogs --decision deny --format jsonl --last day --location path"))]
    Flows(FlowsArgs),
    /// Tuples, packets, bytes and distinct endpoints per time bin.
    #[command(after_help = examples!("nsgflow timeline ./flowlogs --bin 5m --decision deny" "nsgflow timeline ./flowlogs --bin 1d --format csv"))]
    Timeline(TimelineArgs),
    /// Stitch B/C/E tuples into connections and export them (CSV or JSON lines).
    #[command(after_help = examples!("nsgflow connections ./flowlogs --dst 203.0.113.7 --format jsonl" "nsgflow connections ./flowlogs --proto tcp --since today"))]
    Connections(ConnectionsArgs),
    /// The ingress or egress graph (Graphviz DOT or JSON) with fan-in/fan-out rankings.
    #[command(after_help = examples!("nsgflow graph ./flowlogs --direction in --top 30 > ingress.dot" "nsgflow graph ./flowlogs --direction out --group label --labels nets.csv --format json"))]
    Graph(GraphArgs),
    /// Finish partial files (from `summary` or `report --save-partial`, e.g. one per
    /// `--shard`) into exactly what one run over all their blobs prints or writes.
    #[command(after_help = examples!("nsgflow merge part-*.part -o weekly" "nsgflow merge a.part b.part --format json"))]
    Merge(MergeArgs),
    /// Write a realistic synthetic flow-log container (for demos, tests, benchmarks).
    #[command(after_help = examples!(
        "nsgflow gen -o /tmp/demo --attacks"
        "nsgflow gen -o /tmp/big --size 1G --nsgs 4 --nics-per-nsg 4 --hours 6 --seed 7"
        "nsgflow gen -o /tmp/vnet --family vnet --hours 24 --start 2026-01-05"
    ))]
    Gen(GenArgs),
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish.
    #[command(after_help = examples!(
        "nsgflow completions bash > ~/.local/share/bash-completion/completions/nsgflow"
        "nsgflow completions zsh > ~/.zfunc/_nsgflow"
        "nsgflow completions fish > ~/.config/fish/completions/nsgflow.fish"
    ))]
    Completions(CompletionsArgs),
    /// Print the manual page nsgflow(1), or write one page per subcommand into a folder.
    #[command(after_help = examples!(
        "nsgflow man | man -l -"
        "nsgflow man --out ~/.local/share/man/man1"
    ))]
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write nsgflow.1 and nsgflow-<command>.1 into this folder (created if missing)
    /// instead of printing nsgflow.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace pages already in the folder.
    #[arg(long)]
    pub force: bool,
}

/// Output format of `summary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `--last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeriodArg {
    Hour,
    Day,
    Week,
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
    /// Only tuples at or after this time: RFC 3339 (2026-01-05T13:00:00Z), a date (UTC), or
    /// relative to now: 7d (seven days ago), now-24h, today, yesterday (units s m h d w).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Only tuples before this time: as --since (now-1h, today, 2026-01-12).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Only the last complete UTC hour, day or ISO week (Monday to Monday) before now: a
    /// weekly job runs `--last week` any day of the next week. NSGFLOW_NOW sets now.
    #[arg(long, value_enum, value_name = "PERIOD", conflicts_with_all = ["since", "until"])]
    pub last: Option<PeriodArg>,
    /// Only this NSG (name, case-insensitive; repeatable).
    #[arg(long, value_name = "NAME")]
    pub nsg: Vec<String>,
    /// Only this subscription id (case-insensitive; repeatable).
    #[arg(long, value_name = "ID")]
    pub subscription: Vec<String>,
    /// Only NSG flow logs or only VNet flow logs.
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,
    /// Only tuples whose source is in this CIDR (v4 or v6; repeatable).
    #[arg(long, value_name = "CIDR")]
    pub src: Vec<String>,
    /// Only tuples whose destination is in this CIDR (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub dst: Vec<String>,
    /// Only this destination port (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only this source port (repeatable).
    #[arg(long, value_name = "PORT")]
    pub sport: Vec<u16>,
    /// Only this protocol: tcp, udp or an IANA number (repeatable).
    #[arg(long, value_name = "PROTO")]
    pub proto: Vec<String>,
    /// Only allowed or only denied tuples.
    #[arg(long, value_enum)]
    pub decision: Option<DecisionArg>,
    /// Only inbound or only outbound tuples (the NIC's view); for `graph`, which graph
    /// (in = ingress, the default; out = egress).
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
    /// Only rules matching this glob, e.g. 'UserRule_*' (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub rule: Vec<String>,
    /// Only this flow state: B, C, E or D (repeatable).
    #[arg(long, value_name = "STATE")]
    pub state: Vec<String>,
    /// Drop exact duplicate records and tuples (within a blob, rule and NIC/ACL). Duplicates
    /// are counted in the ledger either way.
    #[arg(long)]
    pub dedup: bool,
    /// Leave out blobs of an hour Azure may still be writing (the current hour, and the
    /// last one until 10 minutes past it); without it they are read and marked provisional.
    #[arg(long)]
    pub skip_open_hour: bool,
    /// Largest blob read, in bytes, as stored or once decompressed (gzip, zip): a larger one
    /// is a failed blob with the reason. A size: 4G, 500M, 64K or bytes.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = crate::gen::parse_size)]
    pub max_blob_bytes: u64,
    /// Stop at the first rejected tuple or failed blob.
    #[arg(long)]
    pub strict: bool,
    /// Write every rejected tuple, failed blob and skipped path to FILE, one JSON object per
    /// line (path, byte offset, record, rule, tuple, reason, raw text, message). Replaces
    /// only an earlier rejects file.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Follow symbolic links while walking folders.
    #[arg(long)]
    pub follow_links: bool,
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<usize>,
    /// Read only part K of N of the discovered blobs: whole NICs, balanced by bytes, the
    /// same split for the same input. Run every K with --save-partial, then `merge`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Incremental runs (every command but flows and connections): keep what this run read in DIR
    /// and, next time, read only blobs that are new or changed (per NIC and day); the result
    /// always equals a full read. See the README, "Scheduled weekly report".
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Azure input: most bytes downloading ahead of the parsers or waiting for them (16
    /// downloads at a time); 0 downloads each blob only when a thread reads it.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = crate::gen::parse_size)]
    pub download_budget: u64,
}

#[derive(Args, Debug)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also save the run's unfinished folds and ledger to FILE, for `nsgflow merge`.
    #[arg(long, value_name = "FILE")]
    pub save_partial: Option<PathBuf>,
}

/// How the detectors run (`anomalies`, `report`).
#[derive(Args, Debug)]
pub struct DetectArgs {
    /// What "before" looks like for new talkers and lateral movement: a folder of flow logs
    /// or a partial file from `report --save-partial` (default: the first part of the window).
    #[arg(long, value_name = "INPUT_OR_PARTIAL")]
    pub baseline: Option<PathBuf>,
    /// Detector thresholds and allow-lists (TOML; see the README for every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// List findings at or above this severity.
    #[arg(long, value_name = "SEVERITY", default_value = "info")]
    pub min_severity: String,
    /// Exit 4 when a finding at or above this severity exists.
    #[arg(long, value_name = "SEVERITY")]
    pub fail_on: Option<String>,
}

/// Validated detector options.
#[derive(Clone, Debug, Default)]
pub struct DetectOptions {
    /// Run the detectors (`anomalies` always; `report` unless `--no-findings`).
    pub enabled: bool,
    pub baseline: Option<PathBuf>,
    pub config: DetectConfig,
    pub min_severity: Severity,
    pub fail_on: Option<Severity>,
}

/// `--fail-on SEVERITY`.
fn parse_fail_on(s: Option<&str>) -> Result<Option<Severity>, String> {
    s.map(Severity::parse)
        .transpose()
        .map_err(|e| format!("--fail-on {e}"))
}

impl DetectArgs {
    pub fn to_options(&self) -> Result<DetectOptions, String> {
        Ok(DetectOptions {
            enabled: true,
            baseline: self.baseline.clone(),
            config: match &self.config {
                Some(p) => DetectConfig::load(p)?,
                None => DetectConfig::default(),
            },
            min_severity: Severity::parse(&self.min_severity)
                .map_err(|e| format!("--min-severity {e}"))?,
            fail_on: parse_fail_on(self.fail_on.as_deref())?,
        })
    }
}

#[derive(Args, Debug)]
pub struct AnomaliesArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub defs: RulesArgs,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
    /// Exit 4 when a finding at or above this severity exists.
    #[arg(long, value_name = "SEVERITY")]
    pub fail_on: Option<String>,
}

/// NSG definitions for the rule audit (`audit`, `report --rules`).
#[derive(Args, Debug)]
pub struct RulesArgs {
    /// NSG definitions: `az network nsg show` or `az network nsg list` output, or ARM JSON
    /// (an exported template, `az resource show`). Repeat for more files.
    #[arg(long, value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// What the `VirtualNetwork` service tag means (repeat; default RFC 1918 + RFC 6598).
    #[arg(long, value_name = "CIDR")]
    pub vnet: Vec<String>,
    /// Microsoft's service-tags JSON (`ServiceTags_Public_*.json`), to resolve other tags.
    #[arg(long, value_name = "FILE")]
    pub service_tags: Option<PathBuf>,
}

impl RulesArgs {
    /// The definitions and what the service tags mean.
    pub fn load(
        &self,
    ) -> Result<(Vec<crate::audit::defs::NsgDef>, crate::audit::eval::Tags), String> {
        let mut defs = Vec::new();
        for p in &self.rules {
            defs.extend(crate::audit::defs::load(p).map_err(|e| e.to_string())?);
        }
        let vnet = self
            .vnet
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .map_err(|_| format!("--vnet {s:?}: not a CIDR (e.g. 10.1.0.0/16)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let service = match &self.service_tags {
            Some(p) => crate::audit::eval::load_service_tags(p)?,
            None => Default::default(),
        };
        Ok((defs, crate::audit::eval::Tags::new(vnet, service)))
    }
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Partial files written by `summary` or `report` with --save-partial.
    #[arg(required = true, value_name = "PARTIAL")]
    pub partials: Vec<PathBuf>,
    /// Print the merged summary (table or json), as `summary` would.
    #[arg(long, value_enum, conflicts_with = "out")]
    pub format: Option<Format>,
    /// Write the merged report into this folder, as `report -o` would (report partials only).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write into a non-empty -o folder that is not an earlier nsgflow report.
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Write the run time into the report.
    #[arg(long, requires = "out")]
    pub stamp: bool,
    /// The report's title (default: the inputs and the window).
    #[arg(long, requires = "out", value_name = "TEXT")]
    pub title: Option<String>,
    /// No progress or closing line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// What `merge` produces.
#[derive(Clone, Debug)]
pub enum MergeOutput {
    Summary(Format),
    Report {
        out: PathBuf,
        force: bool,
        stamp: bool,
        quiet: bool,
        title: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DecisionArg {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Inbound to the NIC (`graph`: the ingress graph).
    #[value(alias = "ingress")]
    In,
    /// Outbound from the NIC (`graph`: the egress graph).
    #[value(alias = "egress")]
    Out,
}

/// What addresses mean.
#[derive(Args, Debug)]
pub struct AddrArgs {
    /// Also treat this CIDR as internal (besides RFC 1918, RFC 6598, loopback, link-local,
    /// IPv6 ULA; repeatable).
    #[arg(long, value_name = "CIDR")]
    pub internal: Vec<String>,
    /// CSV of `cidr,name` labels (longest prefix wins), used by --group label and shown beside
    /// addresses.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
}

/// Output format of tables (`top`, `timeline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    Table,
    Json,
    Csv,
}

/// Output format of row exports (`flows`, `connections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RowsFormat {
    Csv,
    Jsonl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ByArg {
    Src,
    Dst,
    Pair,
    Dport,
    Rule,
    Nsg,
    Mac,
    Class,
    Connection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    Tuples,
    Bytes,
    Packets,
    Denied,
    Allowed,
    DistinctDst,
    DistinctSrc,
    DistinctDport,
    /// Connections only.
    Duration,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub addr: AddrArgs,
    /// What to rank.
    #[arg(long, value_enum, default_value_t = ByArg::Src)]
    pub by: ByArg,
    /// By what.
    #[arg(long, value_enum, default_value_t = MetricArg::Tuples)]
    pub metric: MetricArg,
    /// How many rows.
    #[arg(short = 'n', long = "count", default_value_t = 10)]
    pub n: usize,
    /// Group addresses: ip, label, prefix/N (IPv4 /N and IPv6 /4N; N over 32: IPv6 /N) or prefix/V4,V6.
    #[arg(long, default_value = "ip")]
    pub group: String,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub addr: AddrArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    /// With `--rules`, the report has an Audit section and `audit.csv` (see `nsgflow audit`).
    #[command(flatten)]
    pub defs: RulesArgs,
    /// Skip the detectors (the findings section then says they did not run): they take
    /// about a sixth of the report's time.
    #[arg(long)]
    pub no_findings: bool,
    /// Folder to write the report into: created if missing (mode 0700), or an earlier
    /// nsgflow report, whose files are replaced. Any other non-empty folder needs --force.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Write into a non-empty -o folder that is not an earlier nsgflow report.
    #[arg(long)]
    pub force: bool,
    /// Write the run time into the report (off by default, so reports reproduce byte for byte).
    #[arg(long)]
    pub stamp: bool,
    /// The report's title (default: the inputs and the window, e.g. "Flow logs of
    /// container, 2026-01-05 00:00 to 02:59 UTC").
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also save the run's unfinished folds and ledger to FILE, for `nsgflow merge`.
    #[arg(long, value_name = "FILE")]
    pub save_partial: Option<PathBuf>,
    /// A previous run's report.json: the report opens with what changed since (totals, new
    /// and vanished external sources, destinations, ports and rules with traffic, denied
    /// shares, new, gone and open findings)
    #[arg(long, value_name = "REPORT_JSON")]
    pub compare: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FlowsArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(long, value_enum, default_value_t = RowsFormat::Csv)]
    pub format: RowsFormat,
    /// Where each row says it came from: `index` (a `blob` column, the blob's position in
    /// path order, 0-based; --blob-list writes the list) or `path` (the full blob path in
    /// every row, about twice the output)
    #[arg(long, value_enum, default_value_t = crate::export::Location::Index)]
    pub location: crate::export::Location,
    /// Write the blobs read, in path order, as CSV (`blob,path,bytes`): what the `blob`
    /// column indexes
    #[arg(long, value_name = "FILE")]
    pub blob_list: Option<PathBuf>,
    /// Replace an existing --blob-list file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct TimelineArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Bin width: Ns, Nm, Nh or Nd (e.g. 5m, 1h, 1d).
    #[arg(long, default_value = "1h")]
    pub bin: String,
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    pub format: TableFormat,
}

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(long, value_enum, default_value_t = RowsFormat::Csv)]
    pub format: RowsFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeightArg {
    Tuples,
    Bytes,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub addr: AddrArgs,
    /// Group addresses into nodes: ip, label, prefix/N (IPv4 /N and IPv6 /4N; N over 32: IPv6 /N) or prefix/V4,V6.
    #[arg(long, default_value = "ip")]
    pub group: String,
    /// Keep the N heaviest edges (fan rankings list N nodes).
    #[arg(long, default_value_t = 50)]
    pub top: usize,
    /// Edge weight for --top.
    #[arg(long, value_enum, default_value_t = WeightArg::Tuples)]
    pub weight: WeightArg,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
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
    /// Inject one attack of each kind the detectors know (scan, sweep, exfiltration, beacon,
    /// new talker, denied spike, lateral movement, exposed RDP) and write their ground truth
    /// to <OUT>.attacks.json beside the container. Needs 6 NICs and 3 hours.
    #[arg(long)]
    pub attacks: bool,
}

fn parse_state(s: &str) -> Result<FlowState, String> {
    match s.to_ascii_uppercase().as_str() {
        "B" => Ok(FlowState::Begin),
        "C" => Ok(FlowState::Continuing),
        "E" => Ok(FlowState::End),
        "D" => Ok(FlowState::Denied),
        _ => Err(format!("--state {s:?}: use B, C, E or D")),
    }
}

/// Validated configuration for a run over inputs.
#[derive(Clone, Debug, Default)]
pub struct InputConfig {
    pub inputs: Vec<PathBuf>,
    pub discover: DiscoverOptions,
    pub run: RunOptions,
    /// Worker threads; `None` = rayon's default (one per core).
    pub threads: Option<usize>,
    /// `--shard K/N`; `None` reads every discovered blob.
    pub shard: Option<Shard>,
    /// `--state-dir DIR`: incremental runs ([`crate::state::incremental`]).
    pub state_dir: Option<PathBuf>,
}

/// What `main` hands to `app::run`. One per process, so the size of its largest variant
/// (`Report`) costs nothing worth boxing for.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Config {
    Summary {
        input: InputConfig,
        format: Format,
        /// `--save-partial`; `None` saves nothing.
        save_partial: Option<PathBuf>,
        /// The filters as given (recorded in a partial file).
        filters: Vec<String>,
    },
    Merge {
        partials: Vec<PathBuf>,
        output: MergeOutput,
    },
    Report {
        /// `--rules`: the definitions and what the service tags mean.
        rules: Option<(Vec<crate::audit::defs::NsgDef>, crate::audit::eval::Tags)>,
        input: InputConfig,
        book: AddressBook,
        out: PathBuf,
        /// `--force`: write into any folder.
        force: bool,
        stamp: bool,
        quiet: bool,
        /// `--title`.
        title: Option<String>,
        /// The filters as given, one `--flag value` each (for the report header).
        filters: Vec<String>,
        /// `--save-partial`; `None` saves nothing.
        save_partial: Option<PathBuf>,
        detect: DetectOptions,
        /// `--compare`: the previous report.json.
        compare: Option<PathBuf>,
    },
    Anomalies {
        input: InputConfig,
        book: AddressBook,
        detect: DetectOptions,
        format: TableFormat,
    },
    Audit {
        input: InputConfig,
        defs: Vec<crate::audit::defs::NsgDef>,
        tags: crate::audit::eval::Tags,
        format: TableFormat,
        fail_on: Option<Severity>,
    },
    Top {
        input: InputConfig,
        book: AddressBook,
        spec: TopSpec,
        connections: Option<ConnMetric>,
        format: TableFormat,
    },
    Flows {
        input: InputConfig,
        format: RowFormat,
        location: crate::export::Location,
        blob_list: Option<PathBuf>,
        force: bool,
    },
    Timeline {
        input: InputConfig,
        bin_ms: i64,
        format: TableFormat,
    },
    Connections {
        input: InputConfig,
        format: RowFormat,
    },
    Graph {
        input: InputConfig,
        book: AddressBook,
        direction: Direction,
        group: Grouping,
        top: usize,
        weight: Weight,
        format: GraphFormat,
    },
    Gen(GenOptions),
    Completions(clap_complete::Shell),
    Man {
        out: Option<PathBuf>,
        force: bool,
    },
}

impl AddrArgs {
    pub fn to_book(&self) -> Result<AddressBook, String> {
        let internal = self
            .internal
            .iter()
            .map(|c| parse_net(c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut book = AddressBook::new(internal);
        if let Some(f) = &self.labels {
            book.load_labels(f)?;
        }
        Ok(book)
    }
}

fn rows_format(f: RowsFormat) -> RowFormat {
    match f {
        RowsFormat::Csv => RowFormat::Csv,
        RowsFormat::Jsonl => RowFormat::JsonLines,
    }
}

impl InputArgs {
    /// The filters as the user gave them, one `--flag value` per entry.
    pub fn describe_filters(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut add = |flag: &str, vals: Vec<String>| {
            for x in vals {
                v.push(format!("--{flag} {x}"));
            }
        };
        // A relative bound is shown with the time it meant in this run.
        let shown = |b: &Option<String>| -> Vec<String> {
            b.iter()
                .map(|x| match crate::text::parse_absolute(x) {
                    Some(_) => x.clone(),
                    None => match parse_time_bound(x) {
                        Ok(ms) => format!("{x} (= {})", crate::text::fmt_ms(ms)),
                        Err(_) => x.clone(),
                    },
                })
                .collect()
        };
        add("since", shown(&self.since));
        add("until", shown(&self.until));
        if let (Some(p), Ok(Some((a, b)))) = (self.last, self.last_window()) {
            let (a, b) = (crate::text::fmt_ms(a), crate::text::fmt_ms(b));
            let name = p.to_possible_value().expect("no variant is skipped");
            add("last", vec![format!("{} (= {a} to {b})", name.get_name())]);
        }
        add("nsg", self.nsg.clone());
        add("subscription", self.subscription.clone());
        add(
            "family",
            self.family
                .iter()
                .map(|f| format!("{f:?}").to_lowercase())
                .collect(),
        );
        add("src", self.src.clone());
        add("dst", self.dst.clone());
        add("port", self.port.iter().map(|p| p.to_string()).collect());
        add("sport", self.sport.iter().map(|p| p.to_string()).collect());
        add("proto", self.proto.clone());
        add(
            "decision",
            self.decision
                .iter()
                .map(|d| format!("{d:?}").to_lowercase())
                .collect(),
        );
        add(
            "direction",
            self.direction
                .iter()
                .map(|d| format!("{d:?}").to_lowercase())
                .collect(),
        );
        add("rule", self.rule.clone());
        add("state", self.state.clone());
        if self.dedup {
            v.push("--dedup".to_string());
        }
        v
    }

    /// `--last`'s window, `[start, end)` in Unix ms.
    pub fn last_window(&self) -> Result<Option<(i64, i64)>, String> {
        let Some(p) = self.last else {
            return Ok(None);
        };
        let p = match p {
            PeriodArg::Hour => crate::text::Period::Hour,
            PeriodArg::Day => crate::text::Period::Day,
            PeriodArg::Week => crate::text::Period::Week,
        };
        Ok(Some(crate::text::last_period(p, crate::text::now_ms()?)))
    }

    pub fn to_config(&self) -> Result<InputConfig, String> {
        let (since_ms, until_ms) = match self.last_window()? {
            Some((a, b)) => (Some(a), Some(b)),
            None => (
                self.since.as_deref().map(parse_time_bound).transpose()?,
                self.until.as_deref().map(parse_time_bound).transpose()?,
            ),
        };
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
                skip_open_hour: self.skip_open_hour,
                since_ms,
                until_ms,
                nsgs: self.nsg.clone(),
                subscriptions: self.subscription.clone(),
                kind,
            },
            run: RunOptions {
                parse: ParseOptions {
                    dedup: self.dedup,
                    limits: crate::parse::compressed::Limits {
                        max_bytes: self.max_blob_bytes,
                        ..Default::default()
                    },
                    keep_rejects: self.rejects.is_some(),
                },
                filter: Filter {
                    since_ms,
                    until_ms,
                    nsgs: self.nsg.clone(),
                    subscriptions: self.subscription.clone(),
                    kind,
                    rules: self
                        .rule
                        .iter()
                        .map(|g| glob::Pattern::new(g).map_err(|e| format!("--rule {g:?}: {e}")))
                        .collect::<Result<_, _>>()?,
                    src: self
                        .src
                        .iter()
                        .map(|c| parse_net(c))
                        .collect::<Result<_, _>>()?,
                    dst: self
                        .dst
                        .iter()
                        .map(|c| parse_net(c))
                        .collect::<Result<_, _>>()?,
                    dports: self.port.clone(),
                    sports: self.sport.clone(),
                    protocols: self
                        .proto
                        .iter()
                        .map(|p| parse_protocol(p))
                        .collect::<Result<_, _>>()?,
                    decision: self.decision.map(|d| match d {
                        DecisionArg::Allow => Decision::Allow,
                        DecisionArg::Deny => Decision::Deny,
                    }),
                    direction: self.direction.map(|d| match d {
                        DirectionArg::In => Direction::Inbound,
                        DirectionArg::Out => Direction::Outbound,
                    }),
                    states: self
                        .state
                        .iter()
                        .map(|s| parse_state(s))
                        .collect::<Result<_, _>>()?,
                },
                strict: self.strict,
                download_budget: self.download_budget,
                rejects: self.rejects.as_ref().map(|p| {
                    std::sync::Arc::new(crate::rejects::RejectLog::new(
                        p.clone(),
                        self.inputs
                            .iter()
                            .map(|i| i.display().to_string())
                            .collect(),
                    ))
                }),
            },
            threads: self.threads,
            shard: self.shard.as_deref().map(Shard::parse).transpose()?,
            state_dir: self.state_dir.clone(),
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
                save_partial: a.save_partial.clone(),
                filters: a.input.describe_filters(),
            }),
            Command::Merge(a) => Ok(Config::Merge {
                partials: a.partials.clone(),
                output: match &a.out {
                    Some(out) => MergeOutput::Report {
                        out: out.clone(),
                        force: a.force,
                        stamp: a.stamp,
                        quiet: a.quiet,
                        title: a.title.clone(),
                    },
                    None => MergeOutput::Summary(a.format.unwrap_or(Format::Table)),
                },
            }),
            Command::Top(a) => {
                let group = Grouping::parse(&a.group)?;
                let connections = match (a.by, a.metric) {
                    (ByArg::Connection, MetricArg::Bytes) => Some(ConnMetric::Bytes),
                    (ByArg::Connection, MetricArg::Packets) => Some(ConnMetric::Packets),
                    (ByArg::Connection, MetricArg::Duration) => Some(ConnMetric::Duration),
                    (ByArg::Connection, MetricArg::Tuples) => Some(ConnMetric::Tuples),
                    (ByArg::Connection, m) => {
                        return Err(format!(
                            "--by connection ranks by bytes, packets, duration or tuples, not {m:?}"
                        ))
                    }
                    (_, MetricArg::Duration) => {
                        return Err("--metric duration needs --by connection".to_string())
                    }
                    _ => None,
                };
                let metric = match a.metric {
                    MetricArg::Tuples | MetricArg::Duration => Metric::Tuples,
                    MetricArg::Bytes => Metric::Bytes,
                    MetricArg::Packets => Metric::Packets,
                    MetricArg::Denied => Metric::Denied,
                    MetricArg::Allowed => Metric::Allowed,
                    MetricArg::DistinctDst => Metric::DistinctDst,
                    MetricArg::DistinctSrc => Metric::DistinctSrc,
                    MetricArg::DistinctDport => Metric::DistinctDport,
                };
                let by = match a.by {
                    ByArg::Src | ByArg::Connection => TopBy::Src,
                    ByArg::Dst => TopBy::Dst,
                    ByArg::Pair => TopBy::Pair,
                    ByArg::Dport => TopBy::Dport,
                    ByArg::Rule => TopBy::Rule,
                    ByArg::Nsg => TopBy::Nsg,
                    ByArg::Mac => TopBy::Mac,
                    ByArg::Class => TopBy::Class,
                };
                if a.n == 0 {
                    return Err("-n must be at least 1".to_string());
                }
                Ok(Config::Top {
                    input: a.input.to_config()?,
                    book: a.addr.to_book()?,
                    spec: TopSpec {
                        by,
                        metric,
                        group,
                        n: a.n,
                    },
                    connections,
                    format: a.format,
                })
            }
            Command::Report(a) => Ok(Config::Report {
                rules: if a.defs.rules.is_empty() {
                    None
                } else {
                    Some(a.defs.load()?)
                },
                input: a.input.to_config()?,
                book: a.addr.to_book()?,
                out: a.out.clone(),
                force: a.force,
                stamp: a.stamp,
                quiet: a.quiet,
                title: a.title.clone(),
                filters: a.input.describe_filters(),
                save_partial: a.save_partial.clone(),
                compare: a.compare.clone(),
                detect: {
                    if a.no_findings && a.detect.fail_on.is_some() {
                        return Err("--fail-on needs the detectors: drop --no-findings".into());
                    }
                    DetectOptions {
                        enabled: !a.no_findings,
                        ..a.detect.to_options()?
                    }
                },
            }),
            Command::Audit(a) => {
                let (defs, tags) = a.defs.load()?;
                Ok(Config::Audit {
                    input: a.input.to_config()?,
                    defs,
                    tags,
                    format: a.format,
                    fail_on: parse_fail_on(a.fail_on.as_deref())?,
                })
            }
            Command::Anomalies(a) => Ok(Config::Anomalies {
                input: a.input.to_config()?,
                book: a.addr.to_book()?,
                detect: a.detect.to_options()?,
                format: a.format,
            }),
            Command::Flows(a) => Ok(Config::Flows {
                input: a.input.to_config()?,
                format: rows_format(a.format),
                location: a.location,
                blob_list: a.blob_list.clone(),
                force: a.force,
            }),
            Command::Timeline(a) => Ok(Config::Timeline {
                input: a.input.to_config()?,
                bin_ms: parse_bin(&a.bin)?,
                format: a.format,
            }),
            Command::Connections(a) => Ok(Config::Connections {
                input: a.input.to_config()?,
                format: rows_format(a.format),
            }),
            Command::Graph(a) => Ok(Config::Graph {
                input: a.input.to_config()?,
                book: a.addr.to_book()?,
                direction: match a.input.direction {
                    Some(DirectionArg::Out) => Direction::Outbound,
                    _ => Direction::Inbound,
                },
                group: Grouping::parse(&a.group)?,
                top: a.top.max(1),
                weight: match a.weight {
                    WeightArg::Tuples => Weight::Tuples,
                    WeightArg::Bytes => Weight::Bytes,
                },
                format: a.format,
            }),
            Command::Completions(a) => Ok(Config::Completions(a.shell)),
            Command::Man(a) => Ok(Config::Man {
                out: a.out.clone(),
                force: a.force,
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
                    attacks: g.attacks,
                }))
            }
        }
    }
}

/// The shell completion script for `shell`, generated from the clap definitions.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "nsgflow", &mut out);
    out
}

/// The manual pages, `(file name, roff)`: nsgflow.1 first, then nsgflow-<command>.1 for
/// each subcommand. No date in them, so they reproduce byte for byte.
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    let page = |c: clap::Command| -> std::io::Result<(String, Vec<u8>)> {
        let man = clap_mangen::Man::new(c).source(concat!("nsgflow ", env!("CARGO_PKG_VERSION")));
        let mut out = Vec::new();
        man.render(&mut out)?;
        Ok((man.get_filename(), out))
    };
    let mut pages = vec![page(cmd.clone())?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(page(sub.clone())?);
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every example in every subcommand's `--help` parses and validates: the examples
    /// cannot drift from the flags.
    #[test]
    fn every_help_example_parses() {
        let cmd = Cli::command();
        let mut seen = 0;
        for sub in cmd.get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.starts_with("Examples:\n"),
                "{} has no examples",
                sub.get_name()
            );
            for line in help.lines().filter(|l| l.starts_with("  nsgflow ")) {
                // Shell words up to a pipe or redirection; double quotes group.
                let mut words = Vec::new();
                let mut word = String::new();
                let mut quoted = false;
                for c in line.trim().chars() {
                    match c {
                        '"' => quoted = !quoted,
                        ' ' if !quoted => {
                            if !word.is_empty() {
                                words.push(std::mem::take(&mut word));
                            }
                        }
                        _ => word.push(c),
                    }
                }
                words.push(word);
                let end = words
                    .iter()
                    .position(|w| w == "|" || w == ">")
                    .unwrap_or(words.len());
                let cli =
                    Cli::try_parse_from(&words[..end]).unwrap_or_else(|e| panic!("{line}: {e}"));
                // Validation beyond clap (windows, globs, sizes), where no file is read.
                if let Err(e) = cli.to_config() {
                    assert!(
                        e.contains("No such file") || e.contains("cannot read"),
                        "{line}: {e}"
                    );
                }
                seen += 1;
            }
        }
        assert!(seen >= 25, "{seen} examples");
    }

    #[test]
    fn completions_and_man_pages_cover_every_subcommand() {
        let bash = String::from_utf8(completion_script(clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("complete -F _nsgflow"));
        for w in ["report", "anomalies", "--max-blob-bytes", "--last", "hour"] {
            assert!(bash.contains(w), "{w}");
        }
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "nsgflow.1");
        for sub in Cli::command().get_subcommands() {
            let want = format!("nsgflow-{}.1", sub.get_name());
            assert!(names.contains(&want.as_str()), "{want} in {names:?}");
        }
        let report = String::from_utf8_lossy(&pages[1].1).into_owned();
        assert!(
            report.contains(".TH nsgflow-report 1"),
            "{}",
            &report[..200]
        );
        assert!(report.contains("\\-\\-last"));
    }
}
