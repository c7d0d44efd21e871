//! Azure Blob Storage input through the `object_store` crate's Azure backend: listing with
//! the time window, NSG and subscription pruned out of the `y=/m=/d=/h=` tree before a
//! single object is listed, and reads with object_store's retries and backoff.
//!
//! Credentials come from the environment only, as the Azure tools take them (object_store's
//! `MicrosoftAzureBuilder::from_env`): `AZURE_STORAGE_ACCOUNT_KEY` (or the Azure CLI's
//! `AZURE_STORAGE_KEY`), `AZURE_STORAGE_SAS_TOKEN`, an Entra ID client secret
//! (`AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`), managed or workload identity
//! (`AZURE_FEDERATED_TOKEN_FILE`, the IMDS endpoint), or `AZURE_USE_AZURE_CLI=1`.
//! `AZURE_STORAGE_USE_EMULATOR=1` reaches Azurite (at `AZURITE_BLOB_STORAGE_URL`, default
//! `http://127.0.0.1:10000`). A URL with a query string (a SAS on the command line, visible
//! in `ps`) is refused. Every message that leaves this module passes [`redact`].

use crate::discover::{BlobMeta, DiscoverOptions};
use chrono::{NaiveDate, TimeZone, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path as OPath;
use object_store::{ObjectStore, RetryConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A container (and a prefix in it) named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub account: String,
    pub container: String,
    /// Blob-name prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl Location {
    /// `az://ACCOUNT/CONTAINER[/PREFIX]` or `https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]`.
    pub fn parse(input: &str) -> Result<Location, String> {
        if input.contains('?') {
            return Err(format!(
                "{}: a query string (a SAS token?) on the command line is visible to every user in `ps`: put the token in AZURE_STORAGE_SAS_TOKEN and name the container without it",
                redact(input.split('?').next().unwrap_or(""))
            ));
        }
        let (account, rest) = if let Some(rest) = input.strip_prefix(super::REMOTE_SCHEME) {
            rest.split_once('/').unwrap_or((rest, ""))
        } else if let Some(rest) = input
            .strip_prefix("https://")
            .or_else(|| input.strip_prefix("http://"))
        {
            let (host, rest) = rest.split_once('/').unwrap_or((rest, ""));
            match host.strip_suffix(".blob.core.windows.net") {
                Some(account) => (account, rest),
                // The emulator's path-style URL: http://HOST:PORT/ACCOUNT/CONTAINER/PREFIX.
                None if emulator() => rest.split_once('/').unwrap_or((rest, "")),
                None => return Err(format!(
                    "{input}: not an Azure Blob Storage URL (https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX, or az://ACCOUNT/CONTAINER/PREFIX; an emulator's http://HOST:PORT/ACCOUNT/CONTAINER needs AZURE_STORAGE_USE_EMULATOR=1 and AZURITE_BLOB_STORAGE_URL)"
                )),
            }
        } else {
            return Err(format!("{input}: not an az:// or https:// address"));
        };
        let rest = rest.trim_matches('/');
        let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if account.is_empty() || container.is_empty() {
            return Err(format!(
                "{input}: name the account and the container: az://ACCOUNT/CONTAINER[/PREFIX]"
            ));
        }
        Ok(Location {
            account: account.to_string(),
            container: container.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The path a blob of this container travels under (`az://ACCOUNT/CONTAINER/NAME`).
    pub fn blob_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!(
            "{}{}/{}/{name}",
            super::REMOTE_SCHEME,
            self.account,
            self.container
        ))
    }
}

/// The tokio runtime that drives object_store's futures; rayon's workers block on it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nsgflow-azure")
            .enable_all()
            .build()
            .expect("cannot start the I/O runtime")
    })
}

/// Whether `AZURE_STORAGE_USE_EMULATOR` asks for the emulator (as object_store reads it).
fn emulator() -> bool {
    std::env::var("AZURE_STORAGE_USE_EMULATOR")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// One client per account and container, shared by every thread.
fn client(account: &str, container: &str) -> Result<Arc<MicrosoftAzure>, String> {
    type Clients = Mutex<HashMap<(String, String), Arc<MicrosoftAzure>>>;
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    let map = CLIENTS.get_or_init(Default::default);
    let key = (account.to_string(), container.to_string());
    if let Some(c) = map.lock().expect("client map").get(&key) {
        return Ok(c.clone());
    }
    let mut b = MicrosoftAzureBuilder::from_env()
        .with_account(account)
        .with_container_name(container)
        .with_retry(RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        });
    // The Azure CLI's name for the account key, which object_store does not read.
    if std::env::var_os("AZURE_STORAGE_ACCOUNT_KEY").is_none() {
        if let Ok(k) = std::env::var("AZURE_STORAGE_KEY") {
            b = b.with_access_key(k);
        }
    }
    let c = Arc::new(
        b.build()
            .map_err(|e| redact(&format!("az://{account}/{container}: {e}")))?,
    );
    map.lock().expect("client map").insert(key, c.clone());
    Ok(c)
}

/// What listing a remote input gave.
#[derive(Debug, Default)]
pub struct Listing {
    /// Blobs that pass the path filters, with size and modification time.
    pub blobs: Vec<BlobMeta>,
    /// Objects listed (under the pruned prefixes).
    pub listed: u64,
    /// Objects listed but left out by the filters.
    pub filtered_out: u64,
    /// Listing requests made.
    pub requests: u64,
}

/// How many listing requests run at once.
const LIST_CONCURRENCY: usize = 16;

/// List a remote input: walk the folder levels with a delimiter, dropping every `y=`, `m=`,
/// `d=`, `h=`, `SUBSCRIPTIONS/…` and `NETWORKSECURITYGROUPS/…` folder the window and filters
/// exclude, then list each remaining hour flat. An error (authentication, a missing
/// container, no list permission) is one actionable line.
pub fn list(input: &str, opts: &DiscoverOptions) -> Result<Listing, String> {
    let loc = Location::parse(input)?;
    let store = client(&loc.account, &loc.container)?;
    let rt = runtime();
    let mut out = Listing::default();
    let root = if loc.prefix.is_empty() {
        None
    } else {
        Some(OPath::parse(&loc.prefix).map_err(|e| format!("{input}: {e}"))?)
    };
    let take = |objects: Vec<object_store::ObjectMeta>, out: &mut Listing| {
        for o in objects {
            out.listed += 1;
            let path = loc.blob_path(o.location.as_ref());
            if !crate::discover::is_blob_name(&path) {
                continue;
            }
            let mut m = BlobMeta::from_path(&path);
            m.size = o.size;
            m.mtime_ms = Some(o.last_modified.timestamp_millis());
            m.etag = o.e_tag.clone();
            if opts.keeps(&m) {
                out.blobs.push(m);
            } else {
                out.filtered_out += 1;
            }
        }
    };
    // Folders to list level by level, and folders to list whole. The first request (the
    // input's own prefix) says whether the account, the credentials and the container work.
    let mut level: Vec<Option<OPath>> = vec![root];
    let mut whole: Vec<OPath> = Vec::new();
    while !level.is_empty() {
        let batch = std::mem::take(&mut level);
        let results: Vec<object_store::ListResult> = rt
            .block_on(
                futures::stream::iter(batch.iter().map(|p| store.list_with_delimiter(p.as_ref())))
                    .buffered(LIST_CONCURRENCY)
                    .try_collect(),
            )
            .map_err(|e| explain(&loc, &e))?;
        out.requests += batch.len() as u64;
        for r in results {
            for p in r.common_prefixes {
                match prune(p.as_ref(), opts) {
                    Walk::Skip => {}
                    Walk::Descend => level.push(Some(p)),
                    Walk::Flat => whole.push(p),
                }
            }
            take(r.objects, &mut out);
        }
    }
    let flat: Vec<Vec<object_store::ObjectMeta>> = rt
        .block_on(
            futures::stream::iter(
                whole
                    .iter()
                    .map(|p| store.list(Some(p)).try_collect::<Vec<_>>()),
            )
            .buffered(LIST_CONCURRENCY)
            .try_collect(),
        )
        .map_err(|e| explain(&loc, &e))?;
    out.requests += whole.len() as u64;
    for objects in flat {
        take(objects, &mut out);
    }
    out.blobs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What to do with a folder (a common prefix) while listing.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// The filters exclude everything under it.
    Skip,
    /// List its next level.
    Descend,
    /// The window keeps all of it (an hour, or a whole day, month or year): list
    /// everything under it in one flat listing.
    Flat,
}

const HOUR_MS: i64 = 3_600_000;

/// Decide from a folder's own path whether the window, `--nsg` and `--subscription` can keep
/// anything under it, and whether all of it. The hours a partial date covers are `[start, end)`; a blob of hour `h`
/// is kept when `h + 1h > since` and `h - 1h < until` (see `DiscoverOptions::keeps`).
fn prune(prefix: &str, opts: &DiscoverOptions) -> Walk {
    let segs: Vec<&str> = prefix.trim_end_matches('/').split('/').collect();
    let (mut y, mut mo, mut d, mut h) = (None, None, None, None);
    for (i, s) in segs.iter().enumerate() {
        let prev = if i > 0 { segs[i - 1] } else { "" };
        if prev.eq_ignore_ascii_case("SUBSCRIPTIONS")
            && !opts.subscriptions.is_empty()
            && !opts.subscriptions.iter().any(|w| w.eq_ignore_ascii_case(s))
        {
            return Walk::Skip;
        }
        if prev.eq_ignore_ascii_case("NETWORKSECURITYGROUPS")
            && !opts.nsgs.is_empty()
            && !opts.nsgs.iter().any(|w| w.eq_ignore_ascii_case(s))
        {
            return Walk::Skip;
        }
        match s.split_once('=') {
            Some(("y", v)) => y = v.parse::<i32>().ok(),
            Some(("m", v)) if mo.is_none() => mo = v.parse::<u32>().ok(),
            Some(("d", v)) => d = v.parse::<u32>().ok(),
            Some(("h", v)) => h = v.parse::<u32>().ok(),
            _ => {}
        }
    }
    let Some(y) = y else {
        return Walk::Descend;
    };
    let ms = |y: i32, mo: u32, d: u32, h: u32| {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|x| x.and_hms_opt(h, 0, 0))
            .map(|x| Utc.from_utc_datetime(&x).timestamp_millis())
    };
    let range = match (mo, d, h) {
        (None, _, _) => ms(y, 1, 1, 0).zip(ms(y + 1, 1, 1, 0)),
        (Some(mo), None, _) => {
            let (ny, nm) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
            ms(y, mo, 1, 0).zip(ms(ny, nm, 1, 0))
        }
        (Some(mo), Some(d), None) => ms(y, mo, d, 0).map(|s| (s, s + 24 * HOUR_MS)),
        (Some(mo), Some(d), Some(h)) => ms(y, mo, d, h).map(|s| (s, s + HOUR_MS)),
    };
    // A folder that names no real date is listed, and its blobs judged one by one.
    let Some((start, end)) = range else {
        return Walk::Descend;
    };
    if opts.since_ms.is_some_and(|s| end <= s)
        || opts.until_ms.is_some_and(|u| start - HOUR_MS >= u)
    {
        return Walk::Skip;
    }
    // Every hour of the range kept (its first and its last): one flat listing of all of it.
    let first_kept = opts.since_ms.is_none_or(|s| start + HOUR_MS > s);
    let last_kept = opts.until_ms.is_none_or(|u| end - 2 * HOUR_MS < u);
    if h.is_some() || (first_kept && last_kept) {
        Walk::Flat
    } else {
        Walk::Descend
    }
}

/// Read one remote blob (path `az://ACCOUNT/CONTAINER/NAME`) into `buf`, at most `max` bytes:
/// the download a [`Prefetch`] made ahead of the reader when there is one, else now.
pub fn read(p: &Path, max: u64, buf: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
    if let Some(r) = take_prefetched(p, buf) {
        return r;
    }
    runtime().block_on(fetch(p.to_path_buf(), max, buf))
}

/// GET one blob into `buf`, at most `max` bytes (`Ok(Some(n))`: over, not kept).
async fn fetch(p: PathBuf, max: u64, buf: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
    let text = p.to_str().unwrap_or("");
    let loc = Location::parse(text).map_err(std::io::Error::other)?;
    let store = client(&loc.account, &loc.container).map_err(std::io::Error::other)?;
    let name = OPath::parse(&loc.prefix).map_err(|e| std::io::Error::other(e.to_string()))?;
    let r = store.get(&name).await.map_err(io_error)?;
    if r.meta.size > max {
        return Ok(Some(r.meta.size));
    }
    buf.reserve(r.meta.size as usize);
    let mut stream = r.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(io_error)?;
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > max {
            let n = buf.len() as u64;
            buf.clear();
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// Downloads running ahead of the readers at once.
pub const PREFETCH_CONCURRENCY: usize = 16;

/// A download ahead of its reader.
enum Slot {
    /// Not started: a reader that asks for it now fetches it itself.
    Queued,
    /// A reader fetched it itself; the prefetcher passes it by.
    Taken,
    /// Downloading.
    InFlight,
    /// Downloaded, waiting for its reader, `n` bytes of the budget held.
    Ready(u64, std::io::Result<Option<u64>>, Vec<u8>),
}

struct PrefetchState {
    slots: HashMap<PathBuf, Slot>,
    /// Bytes downloading or downloaded and not yet taken.
    held: u64,
    in_flight: usize,
    stop: bool,
    /// Most bytes held at once, and downloads made ahead.
    peak: u64,
    fetched: u64,
}

struct PrefetchShared {
    st: Mutex<PrefetchState>,
    cv: std::sync::Condvar,
}

impl PrefetchShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PrefetchState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn prefetchers() -> &'static Mutex<Vec<std::sync::Weak<PrefetchShared>>> {
    static P: OnceLock<Mutex<Vec<std::sync::Weak<PrefetchShared>>>> = OnceLock::new();
    P.get_or_init(Default::default)
}

/// Remote blobs downloaded ahead of the readers, in the order they will ask for them, up to
/// [`PREFETCH_CONCURRENCY`] at once and never more than `budget` bytes downloading or
/// waiting for their reader (a blob larger than the budget is fetched alone). A reader that
/// asks for a blob not yet started fetches it itself, so readers never wait on the budget.
/// Stops (and lets in-flight downloads finish unread) when dropped.
pub struct Prefetch {
    shared: Arc<PrefetchShared>,
    driver: Option<std::thread::JoinHandle<()>>,
}

/// What a prefetcher did: downloads made ahead, and the most bytes it held at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchStats {
    pub fetched: u64,
    pub peak_bytes: u64,
}

impl Prefetch {
    /// Start downloading `order` (remote blob paths and their listed sizes) ahead.
    pub fn start(order: Vec<(PathBuf, u64)>, budget: u64, max: u64) -> Prefetch {
        let shared = Arc::new(PrefetchShared {
            st: Mutex::new(PrefetchState {
                slots: order
                    .iter()
                    .map(|(p, _)| (p.clone(), Slot::Queued))
                    .collect(),
                held: 0,
                in_flight: 0,
                stop: false,
                peak: 0,
                fetched: 0,
            }),
            cv: std::sync::Condvar::new(),
        });
        {
            let mut all = prefetchers().lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&shared));
        }
        let sh = shared.clone();
        let driver = std::thread::Builder::new()
            .name("nsgflow-prefetch".into())
            .spawn(move || {
                for (p, size) in order {
                    let mut st = sh.lock();
                    loop {
                        if st.stop {
                            return;
                        }
                        let fits = st.held == 0 || st.held + size <= budget;
                        if fits && st.in_flight < PREFETCH_CONCURRENCY {
                            break;
                        }
                        st = sh.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                    if !matches!(st.slots.get(&p), Some(Slot::Queued)) {
                        continue;
                    }
                    st.slots.insert(p.clone(), Slot::InFlight);
                    st.held += size;
                    st.peak = st.peak.max(st.held);
                    st.in_flight += 1;
                    st.fetched += 1;
                    drop(st);
                    let sh2 = sh.clone();
                    runtime().spawn(async move {
                        let mut buf = Vec::new();
                        let r = fetch(p.clone(), max, &mut buf).await;
                        let mut st = sh2.lock();
                        st.in_flight -= 1;
                        st.slots.insert(p, Slot::Ready(size, r, buf));
                        drop(st);
                        sh2.cv.notify_all();
                    });
                }
            })
            .expect("cannot start the prefetch thread");
        Prefetch {
            shared,
            driver: Some(driver),
        }
    }

    pub fn stats(&self) -> PrefetchStats {
        let st = self.shared.lock();
        PrefetchStats {
            fetched: st.fetched,
            peak_bytes: st.peak,
        }
    }
}

/// What every prefetcher of this process did so far (for the run's stderr line).
pub fn prefetch_totals() -> PrefetchStats {
    *TOTALS.lock().unwrap_or_else(|e| e.into_inner())
}

static TOTALS: Mutex<PrefetchStats> = Mutex::new(PrefetchStats {
    fetched: 0,
    peak_bytes: 0,
});

impl Drop for Prefetch {
    fn drop(&mut self) {
        let mine = self.stats();
        {
            let mut t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
            t.fetched += mine.fetched;
            t.peak_bytes = t.peak_bytes.max(mine.peak_bytes);
        }
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
        let mut all = prefetchers().lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| {
            w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.shared))
        });
    }
}

/// The prefetched download of `p`, into `buf` (swapped in, not copied), waiting for it when
/// it is in flight; `None` when no prefetcher has it (the reader fetches it itself).
fn take_prefetched(p: &Path, buf: &mut Vec<u8>) -> Option<std::io::Result<Option<u64>>> {
    let all: Vec<Arc<PrefetchShared>> = {
        let all = prefetchers().lock().unwrap_or_else(|e| e.into_inner());
        all.iter().filter_map(|w| w.upgrade()).collect()
    };
    for sh in all {
        let mut st = sh.lock();
        loop {
            match st.slots.get_mut(p) {
                None => break,
                Some(s @ Slot::Queued) => {
                    *s = Slot::Taken;
                    return None;
                }
                Some(Slot::Taken) => return None,
                Some(Slot::InFlight) => {
                    st = sh.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                Some(Slot::Ready(..)) => {
                    let Some(Slot::Ready(size, r, mut bytes)) =
                        st.slots.insert(p.to_path_buf(), Slot::Taken)
                    else {
                        unreachable!("matched above")
                    };
                    st.held -= size;
                    drop(st);
                    sh.cv.notify_all();
                    std::mem::swap(buf, &mut bytes);
                    return Some(r);
                }
            }
        }
    }
    None
}

fn io_error(e: object_store::Error) -> std::io::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => std::io::ErrorKind::PermissionDenied,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, redact(&one_line(&e.to_string())))
}

/// One actionable line for a listing error.
fn explain(loc: &Location, e: &object_store::Error) -> String {
    let text = one_line(&e.to_string());
    let (account, container) = (&loc.account, &loc.container);
    let what = if text.contains("ContainerNotFound")
        || matches!(e, object_store::Error::NotFound { .. })
    {
        format!("container {container} not found in account {account}: check the name (flow logs write insights-logs-networksecuritygroupflowevent and insights-logs-flowlogflowevent)")
    } else if text.contains("AuthenticationFailed")
        || text.contains("AuthorizationFailure")
        || text.contains("AuthorizationPermissionMismatch")
        || text.contains("403")
        || matches!(
            e,
            object_store::Error::Unauthenticated { .. }
                | object_store::Error::PermissionDenied { .. }
        )
    {
        format!("authentication failed for account {account} (or no permission to list container {container}): check AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_KEY, or the SAS token's expiry and its read + list permissions (role: Storage Blob Data Reader)")
    } else {
        format!("cannot list az://{account}/{container}: {text}")
    };
    redact(&what)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Remove every secret the environment holds (account keys, SAS tokens, client secrets) and
/// any `sig=` query parameter from a message.
pub fn redact(s: &str) -> String {
    let mut out = s.to_string();
    for k in [
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_MASTER_KEY",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_CLIENT_SECRET",
        "AZURE_STORAGE_CLIENT_SECRET",
        "AZURE_STORAGE_TOKEN",
    ] {
        if let Ok(v) = std::env::var(k) {
            let v = v.trim().trim_start_matches('?');
            if v.len() >= 4 {
                out = out.replace(v, "[redacted]");
            }
        }
    }
    while let Some(i) = out.find("sig=") {
        let end = out[i..]
            .find(|c: char| c == '&' || c.is_whitespace() || c == '"')
            .map_or(out.len(), |e| i + e);
        out.replace_range(i..end, "[redacted]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = Location::parse("az://acct/insights-logs-flowlogflowevent/flowLogResourceID=/X/")
            .unwrap();
        assert_eq!(l.account, "acct");
        assert_eq!(l.container, "insights-logs-flowlogflowevent");
        assert_eq!(l.prefix, "flowLogResourceID=/X");
        let l = Location::parse("https://acct.blob.core.windows.net/c").unwrap();
        assert_eq!(
            (l.account.as_str(), l.container.as_str(), l.prefix.as_str()),
            ("acct", "c", "")
        );
        assert!(Location::parse("az://acct").is_err());
        assert!(Location::parse("https://example.com/c").is_err());
        let e =
            Location::parse("https://acct.blob.core.windows.net/c?sv=1&sig=SECRET").unwrap_err();
        assert!(
            e.contains("AZURE_STORAGE_SAS_TOKEN") && !e.contains("SECRET"),
            "{e}"
        );
    }

    #[test]
    fn pruning_by_window_nsg_and_subscription() {
        let day = Utc
            .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let opts = DiscoverOptions {
            since_ms: Some(day + 13 * HOUR_MS),
            until_ms: Some(day + 15 * HOUR_MS),
            nsgs: vec!["web-nsg".into()],
            subscriptions: vec!["aaaa".into()],
            ..Default::default()
        };
        let base = "resourceId=/SUBSCRIPTIONS/AAAA/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WEB-NSG";
        assert_eq!(prune(base, &opts), Walk::Descend);
        assert_eq!(prune("resourceId=/SUBSCRIPTIONS/BBBB", &opts), Walk::Skip);
        assert_eq!(prune(&base.replace("WEB-NSG", "DB-NSG"), &opts), Walk::Skip);
        assert_eq!(prune(&format!("{base}/y=2026"), &opts), Walk::Descend);
        // Without a window a year is one flat listing; a day inside the window is too.
        let open = DiscoverOptions::default();
        assert_eq!(prune(&format!("{base}/y=2026"), &open), Walk::Flat);
        let week = DiscoverOptions {
            since_ms: Some(day - 2 * 24 * HOUR_MS),
            until_ms: Some(day + 2 * 24 * HOUR_MS),
            ..Default::default()
        };
        // The day the window ends in (only its 00:00 blob is kept): hour by hour.
        for (d, want) in [
            ("02", Walk::Skip),
            ("03", Walk::Flat),
            ("05", Walk::Flat),
            ("06", Walk::Flat),
            ("07", Walk::Descend),
        ] {
            let p = format!("{base}/y=2026/m=01/d={d}");
            assert_eq!(prune(&p, &week), want, "d={d}");
        }
        assert_eq!(prune(&format!("{base}/y=2026/m=01"), &week), Walk::Descend);
        assert_eq!(prune(&format!("{base}/y=2025"), &opts), Walk::Skip);
        assert_eq!(prune(&format!("{base}/y=2026/m=02"), &opts), Walk::Skip);
        assert_eq!(
            prune(&format!("{base}/y=2026/m=01/d=04"), &opts),
            Walk::Skip
        );
        // A blob of hour h can hold tuples of hour h-1: the hour after the window is listed.
        for (h, want) in [
            (12, Walk::Skip),
            (13, Walk::Flat),
            (14, Walk::Flat),
            (15, Walk::Flat),
            (16, Walk::Skip),
        ] {
            assert_eq!(
                prune(&format!("{base}/y=2026/m=01/d=05/h={h:02}"), &opts),
                want,
                "h={h}"
            );
        }
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("GET https://a/c?sv=1&sig=abc%2Fdef&se=2"),
            "GET https://a/c?sv=1&[redacted]&se=2"
        );
    }
}
