//! End-to-end tests: the `nsgflow` binary on the bundled fixtures, on generated containers
//! and on the published samples, checked against an independent re-count of the input
//! (a plain `serde_json::Value` walk that shares no code with the parser).

use assert_cmd::Command;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn nsgflow() -> Command {
    Command::cargo_bin("nsgflow").unwrap()
}

/// Run `summary --format json` and return (exit code, parsed JSON).
fn summary_json(args: &[&str]) -> (i32, Value) {
    let out = nsgflow()
        .arg("summary")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, v)
}

#[derive(Default, Debug, PartialEq, Eq, Clone, Copy)]
struct Count {
    tuples: u64,
    allowed: u64,
    denied: u64,
    inbound: u64,
    outbound: u64,
    packets_src_to_dst: u64,
    bytes_src_to_dst: u64,
    packets_dst_to_src: u64,
    bytes_dst_to_src: u64,
    /// Tuples with any counter field logged.
    counted: u64,
}

impl Count {
    fn add(&mut self, f: &[&str]) {
        self.tuples += 1;
        // Field 7 is the decision in NSG logs and the flow state in VNet logs: `D` both ways.
        if f[7] == "D" {
            self.denied += 1
        } else {
            self.allowed += 1
        }
        if f[6] == "I" {
            self.inbound += 1
        } else {
            self.outbound += 1
        }
        if f.len() == 13 {
            let n = |s: &str| s.parse::<u64>().unwrap_or(0);
            self.packets_src_to_dst += n(f[9]);
            self.bytes_src_to_dst += n(f[10]);
            self.packets_dst_to_src += n(f[11]);
            self.bytes_dst_to_src += n(f[12]);
            if f[9..13].iter().any(|x| !x.is_empty()) {
                self.counted += 1;
            }
        }
    }
    fn from_json(v: &Value) -> Count {
        let g = |k: &str| v[k].as_u64().unwrap();
        // Packet and byte sums are null ("not logged") exactly when tuples were counted
        // and none logged a count.
        let not_logged = g("tuples") > 0 && g("counters_logged") == 0;
        let sum = |k: &str| {
            assert_eq!(v[k].is_null(), not_logged, "{k} in {v}");
            v[k].as_u64().unwrap_or(0)
        };
        Count {
            tuples: g("tuples"),
            allowed: g("allowed"),
            denied: g("denied"),
            inbound: g("inbound"),
            outbound: g("outbound"),
            packets_src_to_dst: sum("packets_src_to_dst"),
            bytes_src_to_dst: sum("bytes_src_to_dst"),
            packets_dst_to_src: sum("packets_dst_to_src"),
            bytes_dst_to_src: sum("bytes_dst_to_src"),
            counted: g("counters_logged"),
        }
    }
}

#[derive(Default, Debug)]
struct Recount {
    records: u64,
    total: Count,
    families: BTreeMap<&'static str, Count>,
    rules: BTreeMap<(String, String), Count>,
    first: Option<i64>,
    last: Option<i64>,
}

/// An NSG's identity from its ARM id, as the re-count keys it: subscription, resource group
/// and name, lower-cased (Azure compares resource names case-insensitively).
fn nsg_id(arm_id: &str) -> String {
    let parts: Vec<String> = arm_id.split('/').map(str::to_lowercase).collect();
    let after = |seg: &str| {
        parts
            .iter()
            .position(|p| p == seg)
            .map(|i| parts[i + 1].clone())
            .unwrap_or_default()
    };
    format!(
        "{}/{}/{}",
        after("subscriptions"),
        after("resourcegroups"),
        parts.last().unwrap()
    )
}

/// The independent re-count: walk every *.json file as a serde_json::Value.
fn recount(dir: &Path) -> Recount {
    let mut r = Recount::default();
    for e in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !e.file_type().is_file() || e.path().extension().and_then(|x| x.to_str()) != Some("json")
        {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        for rec in v["records"].as_array().unwrap() {
            r.records += 1;
            let mut groups: Vec<(String, String, &'static str, &Vec<Value>)> = Vec::new();
            if let Some(p) = rec.get("properties") {
                let nsg = nsg_id(rec["resourceId"].as_str().unwrap());
                let fam = if p["Version"] == 1 {
                    "nsg_v1"
                } else {
                    "nsg_v2"
                };
                for rf in p["flows"].as_array().unwrap() {
                    let rule = rf["rule"].as_str().unwrap().to_string();
                    r.rules.entry((nsg.clone(), rule.clone())).or_default();
                    for mf in rf["flows"].as_array().unwrap() {
                        groups.push((
                            nsg.clone(),
                            rule.clone(),
                            fam,
                            mf["flowTuples"].as_array().unwrap(),
                        ));
                    }
                }
            } else {
                for acl in rec["flowRecords"]["flows"].as_array().unwrap() {
                    // Azure's own rules sit under the all-zero ACL: "Azure platform".
                    let nsg = match acl["aclID"].as_str().unwrap() {
                        "00000000-0000-0000-0000-000000000000" => "//azure platform".to_string(),
                        id => nsg_id(id),
                    };
                    for g in acl["flowGroups"].as_array().unwrap() {
                        let rule = g["rule"].as_str().unwrap().to_string();
                        groups.push((
                            nsg.clone(),
                            rule,
                            "vnet",
                            g["flowTuples"].as_array().unwrap(),
                        ));
                    }
                }
            }
            for (nsg, rule, fam, tuples) in groups {
                for t in tuples {
                    let f: Vec<&str> = t.as_str().unwrap().split(',').collect();
                    let vnet = fam == "vnet";
                    r.total.add(&f);
                    r.families.entry(fam).or_default().add(&f);
                    r.rules
                        .entry((nsg.clone(), rule.clone()))
                        .or_default()
                        .add(&f);
                    let ts: i64 = f[0].parse().unwrap();
                    let ms = if vnet { ts } else { ts * 1000 };
                    r.first = Some(r.first.map_or(ms, |x: i64| x.min(ms)));
                    r.last = Some(r.last.map_or(ms, |x: i64| x.max(ms)));
                }
            }
        }
    }
    r
}

fn ms_of(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Assert that nsgflow's JSON equals the independent re-count, field by field.
fn assert_matches_recount(v: &Value, r: &Recount) {
    let l = &v["ledger"];
    assert_eq!(l["records"], r.records);
    assert_eq!(l["tuples"], r.total.tuples);
    assert_eq!(l["tuples_accepted"], r.total.tuples);
    assert_eq!(l["tuples_rejected"], 0);
    assert_eq!(Count::from_json(&v["totals"]), r.total);
    for fam in ["nsg_v1", "nsg_v2", "vnet"] {
        assert_eq!(
            Count::from_json(&v["families"][fam]),
            r.families.get(fam).copied().unwrap_or_default(),
            "family {fam}"
        );
    }
    let rules: BTreeMap<(String, String), Count> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                (
                    format!(
                        "{}/{}/{}",
                        x["subscription"].as_str().unwrap(),
                        x["resource_group"].as_str().unwrap(),
                        x["nsg"].as_str().unwrap()
                    )
                    .to_lowercase(),
                    x["rule"].as_str().unwrap().to_string(),
                ),
                Count::from_json(x),
            )
        })
        .collect();
    assert_eq!(rules, r.rules);
    let time = |k: &str| (!v["time"][k].is_null()).then(|| ms_of(&v["time"][k]));
    assert_eq!(time("first"), r.first);
    assert_eq!(time("last"), r.last);
}

#[test]
fn summary_of_the_bundled_container_equals_an_independent_recount() {
    let dir = root().join("fixtures/container");
    let (code, v) = summary_json(&[dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    let r = recount(&dir);
    assert_matches_recount(&v, &r);
    // Pinned from fixtures/README.md.
    assert_eq!(v["ledger"]["blobs"], 24);
    assert_eq!(v["ledger"]["records"], 516);
    assert_eq!(v["ledger"]["tuples"], 849);
    assert_eq!(v["families"]["nsg_v1"]["tuples"], 90);
    assert_eq!(v["families"]["nsg_v2"]["tuples"], 309);
    assert_eq!(v["families"]["vnet"]["tuples"], 450);
    assert!(v["warnings"][0]
        .as_str()
        .unwrap()
        .contains("double logging: 6 NIC-hours"));
}

#[test]
fn summary_of_generated_containers_equals_an_independent_recount() {
    for family in ["nsg", "vnet", "mixed"] {
        let tmp = tempfile::tempdir().unwrap();
        nsgflow()
            .args([
                "gen",
                "--out",
                tmp.path().to_str().unwrap(),
                "--family",
                family,
            ])
            .args(["--nsg-version", "mixed", "--hours", "3", "--seed", "9"])
            .assert()
            .success();
        let (code, v) = summary_json(&[tmp.path().to_str().unwrap()]);
        assert_eq!(code, 0, "{family}");
        let r = recount(tmp.path());
        assert!(r.total.tuples > 1000, "{family}: {}", r.total.tuples);
        assert_matches_recount(&v, &r);
    }
}

// Property: for any generator settings, what nsgflow counts equals what the independent
// re-count (a plain `serde_json::Value` walk) counts, rule by rule and in total.
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..Default::default()
    })]
    #[test]
    fn gen_output_counts_equal_an_independent_reader(
        seed in 0u64..1_000_000,
        family in proptest::sample::select(vec!["nsg", "vnet", "mixed"]),
        version in proptest::sample::select(vec!["1", "2", "mixed"]),
        nsgs in 1u32..4,
        nics in 1u32..4,
        hours in 1u32..5,
        flows in proptest::sample::select(vec!["0.2", "1", "3"]),
        attacks in proptest::bool::ANY,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("c");
        let (nsgs, nics, hours, seed) =
            (nsgs.to_string(), nics.to_string(), hours.to_string(), seed.to_string());
        let mut gen = nsgflow();
        gen.arg("gen").arg("--out").arg(&out).args([
            "--family", family, "--nsg-version", version, "--nsgs", &nsgs,
            "--nics-per-nsg", &nics, "--hours", &hours, "--flows-per-minute", flows,
            "--seed", &seed,
        ]);
        // gen injects attacks into containers of 6 NICs and 3 hours or more.
        if attacks && nsgs.parse::<u32>().unwrap() * nics.parse::<u32>().unwrap() >= 6
            && hours.parse::<u32>().unwrap() >= 3
        {
            gen.arg("--attacks");
        }
        gen.assert().success();
        let (code, v) = summary_json(&[out.to_str().unwrap()]);
        // 0, or 1 when the settings give no tuple at all.
        proptest::prop_assert!(code == 0 || (code == 1 && v["ledger"]["tuples"] == 0), "exit {}", code);
        let r = recount(&out);
        assert_matches_recount(&v, &r);
    }
}

#[test]
fn the_ledger_balances_per_blob_and_in_total() {
    use nsgflow::aggregate::Summary;
    use nsgflow::discover::{discover, DiscoverOptions};
    use nsgflow::pipeline::{process_blob, Worker};
    let d = discover(&[root().join("fixtures")], &DiscoverOptions::default());
    assert!(d.blobs.len() > 30);
    let mut total = nsgflow::parse::Ledger::default();
    let mut w = Worker::default();
    for b in &d.blobs {
        let mut s = Summary::default();
        let l = process_blob(&mut w, b, &Default::default(), &mut s);
        assert!(l.balances(), "{}", b.path.display());
        assert_eq!(l.tuples, l.tuples_accepted + l.tuples_rejected);
        total.merge(l);
    }
    assert!(total.balances());
    let (_, v) = summary_json(&[root().join("fixtures").to_str().unwrap()]);
    assert_eq!(v["ledger"]["tuples"], total.tuples);
    assert_eq!(v["ledger"]["tuples_rejected"], total.tuples_rejected);
}

/// Copy a folder tree (files and folders) from `from` to `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn malformed(name: &str) -> (i32, Value) {
    summary_json(&[root()
        .join("fixtures/malformed")
        .join(name)
        .to_str()
        .unwrap()])
}

fn nonzero_reasons(v: &Value) -> BTreeMap<String, u64> {
    v["ledger"]["rejected_by_reason"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64().unwrap() > 0)
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

#[test]
fn each_bad_tuple_is_rejected_under_its_named_reason_and_the_rest_is_kept() {
    let (code, v) = malformed("bad-tuples.json");
    assert_eq!(code, 3);
    let want: BTreeMap<String, u64> = [
        ("counter", 3),
        ("decision", 1),
        ("direction", 1),
        ("field_count", 1),
        ("flow_state", 1),
        ("ip_address", 1),
        ("port", 2),
        ("protocol", 1),
        ("timestamp", 1),
        ("unknown_version", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(nonzero_reasons(&v), want);
    assert_eq!(v["ledger"]["tuples"], 15);
    assert_eq!(v["ledger"]["tuples_accepted"], 2);
    let ex = &v["ledger"]["reject_examples"];
    let port = ex
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "port")
        .unwrap();
    assert_eq!(port["record"], 0);
    assert_eq!(port["tuple"], 3);
    assert_eq!(
        port["message"],
        "source port \"70000\" is not a port (0-65535)"
    );
    assert!(port["path"].as_str().unwrap().ends_with("bad-tuples.json"));
}

#[test]
fn vnet_specific_rejects_are_named() {
    let (code, v) = malformed("vnet-bad-tuples.json");
    assert_eq!(code, 3);
    let want: BTreeMap<String, u64> = [("field_count", 1), ("flow_state", 1), ("protocol", 1)]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    assert_eq!(nonzero_reasons(&v), want);
    assert_eq!(v["ledger"]["tuples_accepted"], 2);
    assert_eq!(v["encryption"]["NX"], 1);
    assert_eq!(v["encryption"]["other"], 1);
}

#[test]
fn truncated_blob_keeps_complete_records_and_names_the_byte() {
    let (code, v) = malformed("truncated.json");
    assert_eq!(code, 3);
    assert_eq!(v["ledger"]["records"], 2);
    assert_eq!(v["ledger"]["tuples"], 4);
    assert_eq!(v["ledger"]["blobs_partial"], 1);
    let p = &v["ledger"]["problems"][0];
    assert_eq!(p["kind"], "partial");
    assert_eq!(p["byte_offset"], 1331);
    assert!(p["message"].as_str().unwrap().contains("truncated"));
}

#[test]
fn not_json_and_another_schema_fail_with_what_they_look_like() {
    for (name, needle) in [
        (
            "not-json.json",
            "text, not JSON: begins \"This is not JSON: the storage account returned a\"",
        ),
        ("other-schema.json", "another schema"),
    ] {
        let out = nsgflow()
            .arg("summary")
            .arg(root().join("fixtures/malformed").join(name))
            .output()
            .unwrap();
        // Nothing usable was read.
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name) && err.contains(needle), "{name}: {err}");
    }
}

#[test]
fn tolerated_shapes_are_read_and_counted() {
    for (name, key, records, tuples) in [
        ("bom.json", "bom", 1, 3),
        ("fragment.json", "fragment", 2, 2),
        ("bare-record.json", "bare_record", 1, 3),
        ("ndjson.json", "ndjson", 3, 5),
    ] {
        let (code, v) = malformed(name);
        assert_eq!(code, 0, "{name}");
        assert_eq!(v["ledger"]["tolerated"][key], 1, "{name}");
        assert_eq!(v["ledger"]["records"], records, "{name}");
        assert_eq!(v["ledger"]["tuples"], tuples, "{name}");
    }
}

#[test]
fn counter_sums_past_2_64_are_exact_everywhere() {
    // Two tuples of one rule: every counter u64::MAX, then 1. Each sum is 2^64.
    let f = root().join("fixtures/malformed/huge-counters.json");
    let run = |args: &[&str]| {
        let out = nsgflow().args(args).arg(&f).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let two64 = "18446744073709551616";
    let json = run(&["summary", "--format", "json"]);
    for k in [
        "packets_src_to_dst",
        "bytes_src_to_dst",
        "packets_dst_to_src",
        "bytes_dst_to_src",
    ] {
        assert!(json.contains(&format!("\"{k}\": {two64}")), "{k}: {json}");
    }
    assert!(run(&["summary"]).contains(&format!("bytes {two64} / {two64}")));
    // Both directions of the pair: 2^65.
    let top = run(&[
        "top", "--by", "pair", "--metric", "bytes", "--format", "json",
    ]);
    assert!(top.contains("\"bytes\": 36893488147419103232"), "{top}");
    let csv = run(&[
        "top", "--by", "rule", "--metric", "bytes", "--format", "csv",
    ]);
    assert!(csv.contains("36893488147419103232"), "{csv}");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    nsgflow()
        .arg("report")
        .arg(&f)
        .arg("-o")
        .arg(&out)
        .arg("--quiet")
        .assert()
        .code(0);
    let rules = std::fs::read_to_string(out.join("rules.csv")).unwrap();
    assert!(rules.contains(two64), "{rules}");
    let report = std::fs::read_to_string(out.join("report.json")).unwrap();
    assert!(report.contains(two64));
    // A time bin too wide to hold is a usage error, not an abort.
    for bin in ["99999999999d", "9223372036854775807s", "367d"] {
        let out = nsgflow()
            .args(["timeline", "--bin", bin])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("at most 366d"));
    }
}

#[test]
fn other_categories_are_counted_by_name_and_never_read_as_flow_logs() {
    let out = nsgflow()
        .args(["summary", "--format", "json"])
        .arg(root().join("fixtures/malformed/other-categories.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &v["ledger"];
    assert_eq!(l["records"], 5);
    assert_eq!(l["records_unrecognized"], 3);
    assert_eq!(
        l["unrecognized_by_category"],
        serde_json::json!({"Administrative": 1, "NetworkSecurityGroupEvent": 1, "NetworkSecurityGroupRuleCounter": 1})
    );
    // The two flow records around them are read in full.
    assert_eq!(l["tuples"], 3);
    assert_eq!(v["families"]["nsg_v2"]["tuples"], 3);
    // Said once, on stderr, with the categories.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not flow-log records").count(), 1, "{err}");
    assert!(
        err.contains(
            "(Administrative 1, NetworkSecurityGroupEvent 1, NetworkSecurityGroupRuleCounter 1)"
        ),
        "{err}"
    );
}

#[test]
fn records_anywhere_in_the_wrapper_and_both_record_shapes_are_read() {
    // `records` after another key: both records read.
    let (code, v) = malformed("records-not-first.json");
    assert_eq!(code, 0);
    assert_eq!(v["ledger"]["records"], 2);
    assert_eq!(v["ledger"]["tuples"], 3);
    // One record with NSG `properties.flows` and VNet `flowRecords`: the tuples of both.
    let (code, v) = malformed("both-shapes.json");
    assert_eq!(code, 0);
    assert_eq!(v["families"]["nsg_v2"]["tuples"], 1);
    assert_eq!(v["families"]["vnet"]["tuples"], 1);
}

#[test]
fn duplicate_keys_break_the_blob_with_a_counted_reason() {
    // A second "records" array: the first array's record is kept, the blob is partial.
    let (code, v) = malformed("duplicate-records-key.json");
    assert_eq!(code, 3);
    let l = &v["ledger"];
    assert_eq!(
        (l["records"].as_u64(), l["tuples"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(l["blobs_partial"], 1);
    let msg = l["problems"][0]["message"].as_str().unwrap();
    assert!(msg.contains("duplicate key \"records\""), "{msg}");
    assert!(msg.contains("breaks at byte 506"), "{msg}");
    // A record with two "properties": the record before it is kept.
    let (code, v) = malformed("duplicate-field.json");
    assert_eq!(code, 3);
    let l = &v["ledger"];
    assert_eq!(
        (l["records"].as_u64(), l["blobs_partial"].as_u64()),
        (Some(1), Some(1))
    );
    let msg = l["problems"][0]["message"].as_str().unwrap();
    assert!(msg.contains("duplicate field `properties`"), "{msg}");
}

#[test]
fn timestamps_outside_2015_2100_are_rejected_and_skewed_ones_flagged() {
    let (code, v) = summary_json(&[root().join("fixtures/times").to_str().unwrap()]);
    assert_eq!(code, 3);
    let l = &v["ledger"];
    assert_eq!(l["tuples"], 7);
    assert_eq!(l["tuples_accepted"], 3);
    assert_eq!(l["rejected_by_reason"]["timestamp"], 4);
    let msgs: Vec<&str> = l["reject_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        [
            "timestamp \"0\" is outside 2015..2100",
            "timestamp \"4102444800\" is outside 2015..2100",
            "timestamp \"9999999999999999\" is outside 2015..2100",
            "timestamp \"9223372036854775807\" is outside 2015..2100",
        ]
    );
    // Two kept tuples are 3 h after and 2 h before the blob's hour (h=10): flagged.
    assert_eq!(l["clock_skew"], 2);
    assert_eq!(v["time"]["first"], "2026-01-05T08:00:05.000Z");
    assert_eq!(v["time"]["last"], "2026-01-05T13:00:05.000Z");
    let warn = l["problems"][0]["message"].as_str().unwrap();
    assert!(
        warn.starts_with("2 tuples are more than an hour outside the blob's hour"),
        "{warn}"
    );
    assert!(
        warn.contains("tuple 5, time 2026-01-05T13:00:05.000Z"),
        "{warn}"
    );
    // A one-second timeline over them stays small: 5 h of seconds, gaps listed.
    let out = nsgflow()
        .args(["timeline", "--bin", "1s", "--format", "json"])
        .arg(root().join("fixtures/times"))
        .output()
        .unwrap();
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["bins"].as_array().unwrap().len(), 5 * 3600 + 1);
    assert_eq!(t["gaps_listed"], true);
}

#[test]
fn compressed_blobs_are_read_by_their_bytes_and_bombs_refused() {
    use std::io::Write;
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let src = std::fs::read(root().join("fixtures/malformed/mixed-versions.json")).unwrap();
    let bare = std::fs::read(root().join("fixtures/malformed/bare-record.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let w = |name: &str, b: &[u8]| std::fs::write(tmp.path().join(name), b).unwrap();
    // A .json.gz, and gzip bytes under a .json name in two members (`cat a.gz b.gz`).
    w("a.json.gz", &gz(&src));
    let (head, tail) = src.split_at(100);
    let mut two = gz(head);
    two.extend(gz(tail));
    w("b.json", &two);
    // A Storage Explorer style zip with two blobs in folders.
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.add_directory("h=10/", o).unwrap();
    z.start_file("h=10/PT1H.json", o).unwrap();
    z.write_all(&src).unwrap();
    z.start_file("h=11/PT1H.json", o).unwrap();
    z.write_all(&bare).unwrap();
    w("download.zip", &z.finish().unwrap().into_inner());
    // 8 MB of spaces: past --max-blob-bytes 4000000 once decompressed.
    w("bomb.json.gz", &gz(&vec![b' '; 8 << 20]));
    let out = nsgflow()
        .args(["summary", "--format", "json", "--max-blob-bytes", "4000000"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &v["ledger"];
    // mixed-versions (5 tuples) three times, bare-record (3) once.
    assert_eq!(l["tuples"], 18);
    assert_eq!(l["tuples_accepted"], 18);
    assert_eq!(l["tolerated"]["gzip"], 2);
    assert_eq!(l["tolerated"]["zip_entries"], 2);
    assert_eq!(l["tolerated"]["bare_record"], 1);
    // 3 files and 2 zip entries are 5 blobs; the bomb failed with its reason.
    assert_eq!(l["blobs"], 5);
    assert_eq!(l["blobs_failed"], 1);
    let p = &l["problems"][0];
    assert!(p["path"].as_str().unwrap().ends_with("bomb.json.gz"));
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("decompresses to more than --max-blob-bytes 4000000"),
        "{p}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("download.zip!"), "entries are read: {err}");
    // A plain blob over the cap is refused before it is read.
    let out = nsgflow()
        .args(["summary", "--format", "json", "--max-blob-bytes", "100"])
        .arg(root().join("fixtures/malformed/mixed-versions.json"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ledger"]["blobs_failed"], 1);
    assert!(v["ledger"]["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("over --max-blob-bytes 100: not read"));
    // The cap takes a size with a unit, as gen --size does; a wrong unit is a usage error.
    let out = nsgflow()
        .args(["summary", "--format", "json", "--max-blob-bytes", "1K"])
        .arg(root().join("fixtures/malformed/mixed-versions.json"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ledger"]["blobs_failed"], 1);
    assert!(v["ledger"]["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("over --max-blob-bytes 1024: not read"));
    let out = nsgflow()
        .args(["summary", "--max-blob-bytes", "4X"])
        .arg(root().join("fixtures/malformed/mixed-versions.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown size unit"));
}

#[cfg(unix)]
#[test]
fn report_outputs_are_private_atomic_and_never_over_a_users_files() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    copy_tree(&root().join("fixtures/container"), &input);
    let report = |out: &std::path::Path, extra: &[&str]| {
        nsgflow()
            .arg("report")
            .arg(&input)
            .arg("-o")
            .arg(out)
            .args(["--quiet", "--no-findings"])
            .args(extra)
            .output()
            .unwrap()
    };
    // The weekly folder inside the input tree: written, then skipped as input next time.
    let weekly = input.join("weekly");
    assert_eq!(report(&weekly, &[]).status.code(), Some(0));
    let again = report(&weekly, &[]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "an earlier report is replaced"
    );
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("weekly: an nsgflow report folder (its own output): not read as input"));
    let (_, v) = summary_json(&[input.to_str().unwrap()]);
    assert_eq!(
        v["ledger"]["tuples"], 849,
        "the report's JSON is not read as a blob"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&weekly), 0o700);
    assert_eq!(mode(&weekly.join("charts")), 0o700);
    assert_eq!(mode(&weekly.join("index.html")), 0o600);
    assert_eq!(mode(&weekly.join("report.json")), 0o600);
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&weekly)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with(".nsgflow-") || n == ".nsgflow-report"),
        "{names:?}"
    );
    // A user's folder with other files: refused (exit 2, nothing read), then --force.
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let out = report(&mine, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no earlier nsgflow report"));
    assert!(!mine.join("index.html").exists());
    assert_eq!(report(&mine, &["--force"]).status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
    // A symbolic link as the folder is refused; one inside it is replaced, not written
    // through.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&mine, &link).unwrap();
    let out = report(&link, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a symbolic link"));
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::remove_file(weekly.join("index.html")).unwrap();
    std::os::unix::fs::symlink(&victim, weekly.join("index.html")).unwrap();
    assert_eq!(report(&weekly, &[]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(!std::fs::symlink_metadata(weekly.join("index.html"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_blob_found_twice_is_read_once_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("export-a");
    let b = tmp.path().join("export-b");
    copy_tree(&root().join("fixtures/container"), &a);
    // An overlapping second export: the VNet logs again.
    copy_tree(
        &root().join("fixtures/container/insights-logs-flowlogflowevent"),
        &b.join("insights-logs-flowlogflowevent"),
    );
    // A browser's "PT1H (1).json" beside one NSG blob.
    let one = walkdir::WalkDir::new(a.join("insights-logs-networksecuritygroupflowevent"))
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.ends_with("PT1H.json"))
        .unwrap();
    std::fs::copy(&one, one.with_file_name("PT1H (1).json")).unwrap();
    // And export-a given twice, as itself and as `export-a/.`.
    let out = nsgflow()
        .args(["summary", "--format", "json"])
        .arg(&a)
        .arg(a.join("."))
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "duplicates are no loss");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Exactly the bundled container's counts.
    assert_eq!(v["ledger"]["blobs"], 24);
    assert_eq!(v["ledger"]["tuples"], 849);
    let d = v["ledger"]["duplicate_blobs"].as_array().unwrap();
    let how = |h: &str| d.iter().filter(|x| x["how"] == h).count();
    // 25 files of export-a/. are the same files; 12 VNet blobs and PT1H (1).json are copies.
    assert_eq!(how("the same file"), 25);
    assert_eq!(how("the same bytes"), 13);
    let copy_of = d
        .iter()
        .find(|x| {
            x["how"] == "the same bytes" && x["path"].as_str().unwrap().ends_with("PT1H (1).json")
        })
        .unwrap();
    assert_eq!(copy_of["same_as"], one.to_str().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PT1H (1).json: the same bytes as"), "{err}");
}

#[test]
fn the_hour_still_being_written_is_provisional_or_left_out() {
    use chrono::{Datelike, Timelike};
    let tmp = tempfile::tempdir().unwrap();
    let blob = std::fs::read(root().join("fixtures/malformed/mixed-versions.json")).unwrap();
    let at = |t: chrono::DateTime<chrono::Utc>| {
        let d = tmp.path().join(format!(
            "insights-logs-networksecuritygroupflowevent/resourceId=/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG1/y={}/m={:02}/d={:02}/h={:02}/m=00/macAddress=000D3A112233",
            t.year(), t.month(), t.day(), t.hour()
        ));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("PT1H.json"), &blob).unwrap();
        d.join("PT1H.json")
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap();
    let open = at(now);
    at(now - chrono::Duration::days(3));
    let run = |extra: &[&str]| {
        let out = nsgflow()
            .args(["summary", "--format", "json"])
            .args(extra)
            .arg(tmp.path())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            out.status.code(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, v, err) = run(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(v["ledger"]["tuples"], 10, "both read");
    assert_eq!(v["ledger"]["provisional_blobs"][0], open.to_str().unwrap());
    assert!(
        err.contains("provisional: 1 blobs are of an hour Azure may still be writing"),
        "{err}"
    );
    assert!(v["warnings"].to_string().contains("provisional: 1 blobs"));
    let (code, v, err) = run(&["--skip-open-hour"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["ledger"]["tuples"], 5, "the open hour left out");
    assert_eq!(v["ledger"]["open_hour_skipped"][0], open.to_str().unwrap());
    assert!(err.contains("--skip-open-hour: 1 blobs of an hour still being written were left out"));
}

#[test]
fn empty_blobs_warn_and_a_run_without_records_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.json"), "").unwrap();
    std::fs::write(tmp.path().join("b.json"), r#"{"records":[]}"#).unwrap();
    let out = nsgflow()
        .args(["summary", "--format", "json"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "nothing usable was read");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ledger"]["blobs"], 2);
    assert_eq!(v["ledger"]["blobs_empty"], 1);
    assert_eq!(v["ledger"]["blobs_failed"], 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.json: empty_blob: 0 bytes, no records"),
        "{err}"
    );
    assert!(
        err.contains("no records: 2 blobs read (1 empty, 0 failed), none held a flow-log record"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn links_fifos_and_undecodable_names_are_listed_not_lost() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::copy(root().join("fixtures/malformed/bom.json"), t.join("a.json")).unwrap();
    std::os::unix::fs::symlink(t.join("a.json"), t.join("link.json")).unwrap();
    std::os::unix::fs::symlink(t.join("gone.json"), t.join("dangling.json")).unwrap();
    let fifo = t.join("fifo.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Two names that differ only in a byte that is not UTF-8 (both empty: warned by name).
    for b in [0xfeu8, 0xff] {
        let bytes = [b'x', b, b'.', b'j', b's', b'o', b'n'];
        std::fs::write(t.join(std::ffi::OsStr::from_bytes(&bytes)), "").unwrap();
    }
    let (code, v) = summary_json(&[t.to_str().unwrap()]);
    assert_eq!(code, 3, "skipped paths are said and make exit 3");
    assert_eq!(v["ledger"]["tuples"], 3, "a.json read once");
    let skipped: BTreeMap<String, String> = v["ledger"]["skipped_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let p = s["path"].as_str().unwrap();
            let name = p.rsplit('/').next().unwrap().to_string();
            (name, s["reason"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        skipped["fifo.json"],
        "not a regular file (a FIFO): not read"
    );
    assert_eq!(
        skipped["link.json"],
        "a symbolic link, not followed (--follow-links follows it)"
    );
    assert_eq!(
        skipped["dangling.json"],
        "a symbolic link, not followed (--follow-links follows it)"
    );
    let problems: Vec<&str> = v["ledger"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(
        problems.iter().any(|p| p.ends_with("x\\xfe.json")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.ends_with("x\\xff.json")),
        "{problems:?}"
    );
}

#[test]
fn ipv4_mapped_addresses_are_ipv4_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let blob = std::fs::read_to_string(root().join("fixtures/malformed/mixed-versions.json"))
        .unwrap()
        .replace("185.1.2.3,10.0.0.4", "::ffff:185.1.2.3,10.0.0.4");
    assert!(blob.contains("::ffff:185.1.2.3"));
    std::fs::write(tmp.path().join("m.json"), blob).unwrap();
    let out = nsgflow()
        .args([
            "top",
            "--by",
            "src",
            "--format",
            "json",
            "--src",
            "::ffff:185.1.2.3",
        ])
        .arg(tmp.path().join("m.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The mapped form in the log and in the filter: one IPv4 address.
    assert!(!v.to_string().contains("185.1.2.8"), "{v}");
    assert_eq!(v["rows"][0]["key"], "185.1.2.3");
    assert_eq!(v["rows"][0]["scope"], "external");
}

#[test]
fn unknown_versions_reject_the_record_and_say_the_version() {
    let (code, v) = malformed("bad-versions.json");
    assert_eq!(code, 3);
    let l = &v["ledger"];
    assert_eq!(
        (l["records"].as_u64(), l["blobs_failed"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(l["rejected_by_reason"]["unknown_version"], 2);
    let msgs: Vec<&str> = l["reject_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        [
            "record Version true: not NSG Version 1 or 2, nor VNet flowLogVersion 4",
            "record Version 7: not NSG Version 1 or 2, nor VNet flowLogVersion 4"
        ]
    );
}

#[test]
fn a_panic_on_one_blob_fails_that_blob_and_the_run_goes_on() {
    // The debug build panics on purpose while parsing a blob whose path matches.
    let out = nsgflow()
        .env("NSGFLOW_TEST_PANIC_ON", "bom.json")
        .args(["summary", "--format", "json"])
        .arg(root().join("fixtures/malformed/bom.json"))
        .arg(root().join("fixtures/malformed/mixed-versions.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ledger"]["blobs"], 2);
    assert_eq!(v["ledger"]["blobs_failed"], 1);
    assert_eq!(v["ledger"]["tuples"], 5, "the other blob is read");
    let p = &v["ledger"]["problems"][0];
    assert!(p["path"].as_str().unwrap().ends_with("bom.json"));
    assert!(p["message"]
        .as_str()
        .unwrap()
        .starts_with("internal error while parsing (NSGFLOW_TEST_PANIC_ON matched"));
}

#[test]
fn items_that_are_not_strings_are_skipped_and_reading_goes_on() {
    let (code, v) = malformed("not-strings.json");
    assert_eq!(code, 3);
    let l = &v["ledger"];
    assert_eq!(l["records"], 3, "every record read");
    assert_eq!(l["blobs_partial"], 0);
    assert_eq!(l["tuples"], 7);
    assert_eq!(
        l["tuples_accepted"], 3,
        "the tuples after the bad items are read"
    );
    assert_eq!(l["rejected_by_reason"]["not_a_string"], 4);
    let msgs: Vec<&str> = l["reject_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs[0], "the tuple is a number (1767607206), not a string");
    assert_eq!(msgs[1], "the tuple is an object, not a string");
    assert_eq!(msgs[2], "the tuple is null, not a string");
    assert!(
        msgs[3].starts_with("flowTuples is a string (\"1767607208,"),
        "{}",
        msgs[3]
    );
}

#[test]
fn control_and_bidi_characters_from_logs_are_visible_in_tables_and_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let blob = std::fs::read_to_string(root().join("fixtures/malformed/mixed-versions.json"))
        .unwrap()
        .replace(
            "DefaultRule_AllowInternetOutBound",
            "Allow\\u001b[2J\\u202eTUO\\u200b",
        );
    std::fs::write(tmp.path().join("m.json"), blob).unwrap();
    let run = |args: &[&str]| {
        let out = nsgflow()
            .args(args)
            .arg(tmp.path().join("m.json"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = "Allow\\u{1b}[2J\\u{202e}TUO\\u{200b}";
    for out in [
        run(&["summary"]),
        run(&["flows"]),
        run(&["top", "--by", "rule", "--format", "csv"]),
    ] {
        assert!(out.contains(shown), "{out}");
        assert!(!out.contains('\u{1b}') && !out.contains('\u{202e}') && !out.contains('\u{200b}'));
    }
    // JSON and JSON Lines escape them (`\u202e`): the decoded name is exact, the text shows it.
    let raw_name = "Allow\u{1b}[2J\u{202e}TUO\u{200b}";
    let hidden = |s: &str| s.contains('\u{1b}') || s.contains('\u{202e}') || s.contains('\u{200b}');
    let json = run(&["summary", "--format", "json"]);
    assert!(json.contains("Allow\\u001b[2J\\u202eTUO\\u200b"), "{json}");
    assert!(!hidden(&json));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert!(v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == raw_name));
    let jsonl = run(&["flows", "--format", "jsonl"]);
    assert!(jsonl.contains("\\u202e") && !hidden(&jsonl), "{jsonl}");
    let dot = run(&["graph", "--direction", "out", "--group", "host"]);
    assert!(!hidden(&dot), "{dot}");
    // The report: HTML and Markdown show the escapes, report.json escapes them.
    let out = tmp.path().join("r");
    nsgflow()
        .args(["report", "--quiet", "-o"])
        .arg(&out)
        .arg(tmp.path().join("m.json"))
        .assert()
        .success();
    for f in ["index.html", "report.md", "rules.csv"] {
        let text = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(text.contains("\\u{202e}TUO\\u{200b}"), "{f}: {text}");
        assert!(!hidden(&text), "{f}");
    }
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    assert!(text.contains("\\u202eTUO\\u200b") && !hidden(&text));
    for e in std::fs::read_dir(out.join("charts")).unwrap() {
        assert!(!hidden(
            &std::fs::read_to_string(e.unwrap().path()).unwrap()
        ));
    }
}

#[test]
fn parts_of_the_wrong_shape_are_skipped_and_the_records_after_them_read() {
    let (code, v) = malformed("wrong-shapes.json");
    assert_eq!(code, 3);
    let l = &v["ledger"];
    assert_eq!(l["records"], 6);
    assert_eq!(l["records_malformed"], 4);
    assert_eq!(l["records_unrecognized"], 0);
    assert_eq!(l["blobs_partial"], 0);
    assert_eq!(l["blobs_failed"], 0);
    assert_eq!(l["tuples"], 4);
    assert_eq!(l["tuples_accepted"], 4);
    let msg = l["problems"][0]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("4 records had parts of the wrong JSON type")
            && msg.ends_with("the first: record 1: properties is a string, not an object"),
        "{msg}"
    );
    let out = nsgflow()
        .arg("summary")
        .arg(root().join("fixtures/malformed/wrong-shapes.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4 records had parts of the wrong JSON type (skipped"),
        "{err}"
    );
    // The same when `records` is not the wrapper's first key.
    let good =
        std::fs::read_to_string(root().join("fixtures/malformed/records-not-first.json")).unwrap();
    let mut w: Value = serde_json::from_str(&good).unwrap();
    w["records"]
        .as_array_mut()
        .unwrap()
        .insert(0, serde_json::json!(42));
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("w.json");
    // Keep `records` after the other keys, as in the fixture.
    let text = good.replacen("\"records\":[", "\"records\":[42,", 1);
    std::fs::write(&f, text).unwrap();
    let (code, v) = summary_json(&[f.to_str().unwrap()]);
    assert_eq!(code, 3);
    let n = w["records"].as_array().unwrap().len();
    assert_eq!(v["ledger"]["records"], n);
    assert_eq!(v["ledger"]["records_malformed"], 1);
    assert_eq!(
        v["ledger"]["tuples_accepted"], 3,
        "the 3 tuples of records-not-first.json"
    );
    let msg = v["ledger"]["problems"][0]["message"].as_str().unwrap();
    assert!(
        msg.ends_with("record 0: a record is a number, not an object"),
        "{msg}"
    );
}

#[test]
fn version_is_decided_per_record() {
    let (code, v) = malformed("mixed-versions.json");
    assert_eq!(code, 0);
    assert_eq!(v["families"]["nsg_v2"]["tuples"], 3);
    assert_eq!(v["families"]["nsg_v1"]["tuples"], 2);
}

#[test]
fn rules_with_empty_flows_are_listed_with_zero_hits() {
    let (_, v) = malformed("empty-rule-flows.json");
    let rules: Vec<(&str, u64)> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rule"].as_str().unwrap(), r["tuples"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        rules,
        vec![
            ("DefaultRule_AllowInternetOutBound", 2),
            ("UserRule_AllowRdpLegacy", 0),
            ("UserRule_AllowSqlFromApp", 0)
        ]
    );
}

#[test]
fn duplicates_are_counted_by_default_and_dropped_with_dedup() {
    let (_, v) = malformed("duplicates.json");
    assert_eq!(v["ledger"]["duplicate_records"], 1);
    assert_eq!(v["ledger"]["duplicate_tuples"], 5);
    assert_eq!(v["totals"]["tuples"], 9);
    let (_, v) = summary_json(&[
        root()
            .join("fixtures/malformed/duplicates.json")
            .to_str()
            .unwrap(),
        "--dedup",
    ]);
    assert_eq!(v["ledger"]["duplicate_tuples"], 5);
    assert_eq!(v["ledger"]["tuples_deduplicated"], 5);
    assert_eq!(v["totals"]["tuples"], 4);
}

#[test]
fn a_run_over_all_malformed_fixtures_goes_on_past_every_failure() {
    let (code, v) = summary_json(&[root().join("fixtures/malformed").to_str().unwrap()]);
    assert_eq!(code, 3);
    let l = &v["ledger"];
    assert_eq!(l["blobs"], 21);
    assert_eq!(l["blobs_failed"], 2);
    assert_eq!(l["blobs_partial"], 3);
    assert_eq!(l["tuples"], 78);
    assert_eq!(l["tuples_rejected"], 22);
    assert_eq!(l["tuples_accepted"], 56);
    assert_eq!(l["records_unrecognized"], 3);
    assert_eq!(l["records_malformed"], 4);
}

#[test]
fn unreadable_and_missing_inputs_are_reported_not_fatal() {
    use nsgflow::discover::BlobMeta;
    // A blob that vanished between discovery and reading.
    let meta = BlobMeta {
        path: root().join("fixtures/no-such-blob.json"),
        ..Default::default()
    };
    let s = nsgflow::aggregate::summarize(&[meta], &Default::default());
    assert_eq!(s.ledger.blobs_failed, 1);
    assert!(s.ledger.problems[0].message.starts_with("cannot read"));
    // A missing input beside a good one: reported, the good one is read, exit 3.
    let out = nsgflow()
        .arg("summary")
        .arg(root().join("fixtures/malformed/bom.json"))
        .arg("/no/such/dir")
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/dir"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ledger"]["tuples"], 3);
    assert_eq!(v["ledger"]["skipped_paths"][0]["path"], "/no/such/dir");
}

#[test]
fn exit_codes_follow_the_documented_contract() {
    let tmp = tempfile::tempdir().unwrap();
    nsgflow().arg("summary").arg(tmp.path()).assert().code(1);
    nsgflow()
        .args(["summary", "fixtures", "--since", "not-a-date"])
        .current_dir(root())
        .assert()
        .code(2);
    nsgflow().args(["summary"]).assert().code(2);
    nsgflow()
        .args(["summary", "fixtures/container"])
        .current_dir(root())
        .assert()
        .code(0);
    nsgflow()
        .args(["summary", "fixtures/malformed"])
        .current_dir(root())
        .assert()
        .code(3);
    let out = nsgflow()
        .args(["summary", "fixtures/malformed", "--strict", "-j", "1"])
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--strict"));
}

#[test]
fn filters_restrict_by_nsg_time_family_and_subscription() {
    let dir = root().join("fixtures/container");
    let d = dir.to_str().unwrap();
    let (_, all) = summary_json(&[d]);
    let (_, web) = summary_json(&[d, "--nsg", "web-nsg"]);
    let web_rows: u64 = all["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["nsg"].as_str().unwrap().eq_ignore_ascii_case("web-nsg"))
        .map(|r| r["tuples"].as_u64().unwrap())
        .sum();
    assert_eq!(web["totals"]["tuples"].as_u64().unwrap(), web_rows);
    let (_, vnet) = summary_json(&[d, "--family", "vnet"]);
    assert_eq!(vnet["totals"], all["families"]["vnet"]);
    assert_eq!(vnet["ledger"]["blobs"], 12);
    let (_, hour) = summary_json(&[
        d,
        "--since",
        "2026-01-05T01:00:00Z",
        "--until",
        "2026-01-05T02:00:00Z",
    ]);
    assert!(ms_of(&hour["time"]["first"]) >= 1_767_574_800_000);
    assert!(ms_of(&hour["time"]["last"]) < 1_767_578_400_000);
    let h = hour["ledger"]["tuples_accepted"].as_u64().unwrap();
    assert_eq!(
        h,
        hour["totals"]["tuples"].as_u64().unwrap()
            + hour["ledger"]["tuples_filtered"].as_u64().unwrap()
    );
    let (_, none) = summary_json(&[d, "--subscription", "00000000-0000-0000-0000-00000000dead"]);
    assert_eq!(none["totals"]["tuples"], 0);
}

#[test]
fn json_output_is_byte_identical_across_runs_and_thread_counts() {
    let run = |threads: &str| {
        nsgflow()
            .args(["summary", "fixtures", "--format", "json", "-j", threads])
            .current_dir(root())
            .output()
            .unwrap()
            .stdout
    };
    let one = run("1");
    assert_eq!(one, run("2"));
    assert_eq!(one, run("2"));
}

#[test]
fn hostile_names_cannot_reach_the_terminal_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let blob = r#"{"records":[{"time":"2026-01-05T10:01:00Z","category":"NetworkSecurityGroupFlowEvent","resourceId":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/R/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/EVIL\u001b[2J","properties":{"Version":2,"flows":[{"rule":"UserRule_\u001b]0;pwned\u0007","flows":[{"mac":"000D3A000001","flowTuples":["1767607200,10.0.0.4,52.1.2.3,40001,443,T,O,A,B,,,,"]}]}]}}]}"#;
    std::fs::write(tmp.path().join("PT1H.json"), blob).unwrap();
    let out = nsgflow().arg("summary").arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(text.contains("EVIL\\u{1b}[2J"));
}

/// The published samples (../shared/samples), read in place; skipped when absent.
#[test]
fn published_samples_give_the_documented_counts() {
    let dir = root().join("../shared/samples");
    if !dir.is_dir() {
        eprintln!("skipping: {} is absent (a user's clone)", dir.display());
        return;
    }
    for (name, records, tuples, family) in [
        ("nsg-v1-2018.json", 3, 38, "nsg_v1"),
        ("nsg-v2-learn-example.json", 2, 11, "nsg_v2"),
        ("nsg-v2-sumologic-2024.json", 8, 153, "nsg_v2"),
        ("vnet-learn-example.json", 1, 19, "vnet"),
        ("vnet-nic-sumologic.json", 4, 61, "vnet"),
    ] {
        let (code, v) = summary_json(&[dir.join(name).to_str().unwrap()]);
        assert_eq!(code, 0, "{name}");
        assert_eq!(v["ledger"]["records"], records, "{name}");
        assert_eq!(v["ledger"]["tuples"], tuples, "{name}");
        assert_eq!(v["ledger"]["tuples_rejected"], 0, "{name}");
        assert_eq!(v["families"][family]["tuples"], tuples, "{name}");
        let r = recount(&dir.join(name));
        assert_matches_recount(&v, &r);
    }
}

// ---------------------------------------------------------------- analyst toolkit ----

/// Every tuple of a container, from an independent `serde_json::Value` walk.
struct RawTuple {
    family: &'static str,
    rule: String,
    mac: String,
    f: Vec<String>,
}

impl RawTuple {
    fn ms(&self) -> i64 {
        let ts: i64 = self.f[0].parse().unwrap();
        if self.family == "vnet" {
            ts
        } else {
            ts * 1000
        }
    }
    fn denied(&self) -> bool {
        self.f[7] == "D"
    }
    fn state(&self) -> &str {
        match self.family {
            "vnet" => &self.f[7],
            "nsg_v2" => &self.f[8],
            _ => "",
        }
    }
    fn bytes(&self) -> u64 {
        if self.f.len() < 13 {
            return 0;
        }
        self.f[10].parse::<u64>().unwrap_or(0) + self.f[12].parse::<u64>().unwrap_or(0)
    }
}

fn raw_tuples(dir: &Path) -> Vec<RawTuple> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
    {
        if !e.file_type().is_file() || e.path().extension().and_then(|x| x.to_str()) != Some("json")
        {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        for rec in v["records"].as_array().unwrap() {
            let mac = rec["macAddress"].as_str().unwrap_or("").to_string();
            let mut push = |family, rule: &str, tuples: &Value| {
                for t in tuples.as_array().unwrap() {
                    out.push(RawTuple {
                        family,
                        rule: rule.to_string(),
                        mac: mac.clone(),
                        f: t.as_str().unwrap().split(',').map(str::to_string).collect(),
                    });
                }
            };
            if let Some(p) = rec.get("properties") {
                let fam = if p["Version"] == 1 {
                    "nsg_v1"
                } else {
                    "nsg_v2"
                };
                for rf in p["flows"].as_array().unwrap() {
                    for mf in rf["flows"].as_array().unwrap() {
                        push(fam, rf["rule"].as_str().unwrap(), &mf["flowTuples"]);
                    }
                }
            } else {
                for acl in rec["flowRecords"]["flows"].as_array().unwrap() {
                    for g in acl["flowGroups"].as_array().unwrap() {
                        push("vnet", g["rule"].as_str().unwrap(), &g["flowTuples"]);
                    }
                }
            }
        }
    }
    out
}

fn gen_container(args: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    nsgflow()
        .args([
            "gen",
            "--out",
            tmp.path().to_str().unwrap(),
            "--seed",
            "3",
            "--hours",
            "3",
        ])
        .args(args)
        .assert()
        .success();
    tmp
}

fn run_json(args: &[&str]) -> Value {
    let out = nsgflow().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_lines(args: &[&str]) -> Vec<String> {
    let out = nsgflow().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn top_sources_by_denied_tuples_match_a_recount() {
    let tmp = gen_container(&["--family", "mixed"]);
    let d = tmp.path().to_str().unwrap();
    let mut by: BTreeMap<std::net::IpAddr, u64> = BTreeMap::new();
    for t in raw_tuples(tmp.path()).iter().filter(|t| t.denied()) {
        *by.entry(t.f[1].parse().unwrap()).or_default() += 1;
    }
    let mut want: Vec<(std::net::IpAddr, u64)> = by.into_iter().collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    want.truncate(5);
    let v = run_json(&[
        "top", d, "--by", "src", "--metric", "denied", "-n", "5", "--format", "json",
    ]);
    let got: Vec<(std::net::IpAddr, u64)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().parse().unwrap(),
                r["value"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(want[0].1 > 10);
}

#[test]
fn top_distinct_ports_and_rules_match_a_recount() {
    let tmp = gen_container(&[]);
    let d = tmp.path().to_str().unwrap();
    let raw = raw_tuples(tmp.path());
    // distinct destination ports per source, top 3
    let mut ports: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for t in &raw {
        ports
            .entry(t.f[1].clone())
            .or_default()
            .insert(t.f[4].clone());
    }
    let best = ports.values().map(|s| s.len() as u64).max().unwrap();
    let v = run_json(&[
        "top",
        d,
        "--by",
        "src",
        "--metric",
        "distinct-dport",
        "-n",
        "3",
        "--format",
        "json",
    ]);
    assert_eq!(v["rows"][0]["value"], best);
    // tuples per rule
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    for t in &raw {
        *rules.entry(t.rule.clone()).or_default() += 1;
    }
    let v = run_json(&["top", d, "--by", "rule", "-n", "100", "--format", "json"]);
    let total: u64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tuples"].as_u64().unwrap())
        .sum();
    assert_eq!(total, raw.len() as u64);
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "WEB-NSG/UserRule_AllowHttps")
        .unwrap();
    // WEB-NSG's NICs are 10.0.0.x.
    let want: u64 = raw
        .iter()
        .filter(|t| t.rule == "UserRule_AllowHttps" && t.f[2].starts_with("10.0.0."))
        .count() as u64;
    assert_eq!(row["tuples"], want);
}

#[test]
fn filtered_flow_export_has_exactly_the_matching_rows() {
    let tmp = gen_container(&["--family", "mixed", "--nsg-version", "mixed"]);
    let d = tmp.path().to_str().unwrap();
    let raw = raw_tuples(tmp.path());
    let want = raw
        .iter()
        .filter(|t| t.f[4] == "443" && !t.denied())
        .count();
    assert!(want > 100);
    let lines = run_lines(&[
        "flows",
        d,
        "--port",
        "443",
        "--decision",
        "allow",
        "--format",
        "jsonl",
    ]);
    assert_eq!(lines.len(), want);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    for k in [
        "time",
        "nsg",
        "rule",
        "mac",
        "family",
        "blob",
        "record",
        "tuple",
        "bytes_src_to_dst",
    ] {
        assert!(first.get(k).is_some(), "{k}");
    }
    assert!(
        first.get("path").is_none(),
        "the compact location has no path"
    );
    // The compact location (blob index, record, tuple) and the blob list name exactly what
    // `--location path` writes, in fewer bytes; the list is never written over a file.
    let list = tmp.path().with_extension("blobs.csv");
    let compact = run_lines(&[
        "flows",
        d,
        "--port",
        "443",
        "--blob-list",
        list.to_str().unwrap(),
    ]);
    let full = run_lines(&["flows", d, "--port", "443", "--location", "path"]);
    assert_eq!(compact.len(), full.len());
    let blobs: Vec<String> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .skip(1)
        .enumerate()
        .map(|(i, l)| {
            let (n, rest) = l.split_once(',').unwrap();
            assert_eq!(n, i.to_string());
            rest.rsplit_once(',').unwrap().0.to_string()
        })
        .collect();
    assert!(blobs.len() > 1);
    assert!(compact[0].ends_with(",blob,record,tuple") && full[0].ends_with(",path,record,tuple"));
    for (c, f) in compact.iter().zip(&full).skip(1) {
        // rsplitn: tuple, record, location, then the fields before them.
        let cv: Vec<&str> = c.rsplitn(4, ',').collect();
        let fv: Vec<&str> = f.rsplitn(4, ',').collect();
        assert_eq!(cv[3], fv[3], "same fields before the location");
        assert_eq!(cv[..2], fv[..2], "same record and tuple");
        assert_eq!(blobs[cv[2].parse::<usize>().unwrap()], fv[2]);
    }
    let bytes = |v: &[String]| v.iter().map(|l| l.len() + 1).sum::<usize>();
    assert!(
        bytes(&compact) * 2 < bytes(&full),
        "{} vs {}",
        bytes(&compact),
        bytes(&full)
    );
    let again = nsgflow()
        .args(["flows", d, "--blob-list", list.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("the file exists; --force replaces it"));
    std::fs::remove_file(&list).unwrap();
    let csv = run_lines(&["flows", d, "--port", "443", "--decision", "allow"]);
    assert_eq!(csv.len(), want + 1, "a header and one row per tuple");
    assert!(csv[0].starts_with("time,time_ms,family,nsg,rule,mac,src,sport,dst,dport"));
    // --src CIDR, --rule glob, --proto and --state compose.
    let want = raw
        .iter()
        .filter(|t| {
            t.f[1].starts_with("10.1.") && t.rule.starts_with("DefaultRule_") && t.state() == "E"
        })
        .filter(|t| t.f[5] == "T" || t.f[5] == "6")
        .count();
    let lines = run_lines(&[
        "flows",
        d,
        "--src",
        "10.1.0.0/16",
        "--rule",
        "DefaultRule_*",
        "--proto",
        "tcp",
        "--state",
        "E",
        "--format",
        "jsonl",
    ]);
    assert_eq!(lines.len(), want);
    assert!(want > 10);
    // Deterministic order.
    assert_eq!(
        lines,
        run_lines(&[
            "flows",
            d,
            "--src",
            "10.1.0.0/16",
            "--rule",
            "DefaultRule_*",
            "--proto",
            "tcp",
            "--state",
            "E",
            "--format",
            "jsonl",
            "-j",
            "1",
        ])
    );
}

#[test]
fn connections_conserve_tuples_and_bytes_and_sum_deltas() {
    let tmp = gen_container(&["--family", "nsg"]);
    let d = tmp.path().to_str().unwrap();
    let raw = raw_tuples(tmp.path());
    let lines = run_lines(&["connections", d, "--format", "jsonl"]);
    let conns: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tuples: u64 = conns.iter().map(|c| c["tuples"].as_u64().unwrap()).sum();
    assert_eq!(
        tuples,
        raw.len() as u64,
        "every tuple is in exactly one connection"
    );
    let bytes: u64 = conns
        .iter()
        .map(|c| {
            // Counts are null exactly when none of the connection's tuples logged one.
            assert_eq!(
                c["bytes_src_to_dst"].is_null(),
                c["counters_logged"] == false,
                "{c}"
            );
            c["bytes_src_to_dst"].as_u64().unwrap_or(0)
                + c["bytes_dst_to_src"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(bytes, raw.iter().map(RawTuple::bytes).sum::<u64>());
    let completed = conns.iter().filter(|c| c["status"] == "completed").count();
    let ends = raw.iter().filter(|t| t.state() == "E").count();
    assert_eq!(completed, ends, "one completed connection per E tuple");
    // The biggest connection's bytes equal the sum of its C and E deltas.
    let top = run_json(&[
        "top",
        d,
        "--by",
        "connection",
        "--metric",
        "bytes",
        "-n",
        "1",
        "--format",
        "json",
    ]);
    let c = &top["rows"][0];
    let (s, e) = (
        c["start_ms"].as_i64().unwrap(),
        c["end_ms"].as_i64().unwrap(),
    );
    let want: u64 = raw
        .iter()
        .filter(|t| {
            t.f[1] == c["src"].as_str().unwrap()
                && t.f[2] == c["dst"].as_str().unwrap()
                && t.f[3].parse::<u64>().ok() == c["sport"].as_u64()
                && t.f[4].parse::<u64>().ok() == c["dport"].as_u64()
                && t.mac == c["mac"].as_str().unwrap()
                && (s..=e).contains(&t.ms())
        })
        .map(RawTuple::bytes)
        .sum();
    assert_eq!(
        c["bytes_src_to_dst"].as_u64().unwrap() + c["bytes_dst_to_src"].as_u64().unwrap(),
        want
    );
    assert!(want > 0);
    assert_eq!(c["status"], "completed");
    assert!(conns.iter().any(|c| c["status"] == "stateless"));
    assert!(conns
        .iter()
        .any(|c| c["status"] == "denied" && c["tuples"].as_u64().unwrap() > 1));
}

#[test]
fn timeline_busiest_hour_matches_a_recount() {
    let tmp = gen_container(&["--family", "vnet"]);
    let d = tmp.path().to_str().unwrap();
    let mut per: BTreeMap<i64, u64> = BTreeMap::new();
    for t in raw_tuples(tmp.path()) {
        *per.entry(t.ms() - t.ms().rem_euclid(3_600_000))
            .or_default() += 1;
    }
    let v = run_json(&["timeline", d, "--bin", "1h", "--format", "json"]);
    let bins = v["bins"].as_array().unwrap();
    assert_eq!(bins.len(), per.len());
    for (b, (start, n)) in bins.iter().zip(&per) {
        assert_eq!(ms_of(&b["start"]), *start);
        assert_eq!(b["tuples"], *n);
    }
    let busiest = bins
        .iter()
        .max_by_key(|b| b["tuples"].as_u64().unwrap())
        .unwrap();
    let (start, n) = per.iter().max_by_key(|(_, n)| **n).unwrap();
    assert_eq!(
        (
            ms_of(&busiest["start"]),
            busiest["tuples"].as_u64().unwrap()
        ),
        (*start, *n)
    );
    // 5-minute bins add up to the same total.
    let v5 = run_json(&["timeline", d, "--bin", "5m", "--format", "json"]);
    let total: u64 = v5["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["tuples"].as_u64().unwrap())
        .sum();
    assert_eq!(total, per.values().sum::<u64>());
}

#[test]
fn ingress_graph_carries_every_inbound_tuple_and_ranks_fan_in() {
    let tmp = gen_container(&[]);
    let d = tmp.path().to_str().unwrap();
    let raw = raw_tuples(tmp.path());
    let inbound: Vec<&RawTuple> = raw.iter().filter(|t| t.f[6] == "I").collect();
    let v = run_json(&[
        "graph",
        d,
        "--direction",
        "in",
        "--top",
        "100000",
        "--format",
        "json",
    ]);
    let total: u64 = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tuples"].as_u64().unwrap())
        .sum();
    assert_eq!(total, inbound.len() as u64);
    assert_eq!(
        v["edges_total"].as_u64().unwrap() as usize,
        v["edges"].as_array().unwrap().len()
    );
    let mut fan: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for t in &inbound {
        fan.entry(t.f[2].as_str())
            .or_default()
            .insert(t.f[1].as_str());
    }
    let most = fan.values().map(|s| s.len()).max().unwrap();
    assert_eq!(
        v["fan_in"][0]["neighbours"].as_u64().unwrap() as usize,
        most
    );
    // Egress with prefix grouping: every node is a /24.
    let v = run_json(&[
        "graph",
        d,
        "--direction",
        "egress",
        "--group",
        "prefix/24",
        "--top",
        "5",
        "--format",
        "json",
    ]);
    assert_eq!(v["direction"], "egress");
    assert!(v["edges"].as_array().unwrap().len() <= 5);
    assert!(v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["name"].as_str().unwrap().ends_with("/24")));
}

#[test]
fn labels_name_networks_in_top_and_graph() {
    let tmp = gen_container(&[]);
    let d = tmp.path().to_str().unwrap();
    let labels = tmp.path().join("labels.csv");
    std::fs::write(
        &labels,
        "cidr,name\n10.0.0.0/16,web-subnet\n10.0.0.0/8,corp\n10.255.0.0/24,bastion\n",
    )
    .unwrap();
    let l = labels.to_str().unwrap();
    let v = run_json(&[
        "top", d, "--by", "dst", "--group", "label", "--labels", l, "-n", "50", "--format", "json",
    ]);
    let keys: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"web-subnet") && keys.contains(&"corp"),
        "{keys:?}"
    );
    let raw = raw_tuples(tmp.path());
    let web = raw.iter().filter(|t| t.f[2].starts_with("10.0.")).count() as u64;
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "web-subnet")
        .unwrap();
    assert_eq!(row["tuples"], web);
    let v = run_json(&[
        "top", d, "--by", "src", "--labels", l, "-n", "200", "--format", "json",
    ]);
    let bastion = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"].as_str().unwrap().starts_with("10.255.0."))
        .unwrap();
    assert_eq!(bastion["label"], "bastion");
    assert_eq!(bastion["scope"], "internal");
    let dot = run_lines(&["graph", d, "--group", "label", "--labels", l]).join("\n");
    assert!(dot.contains("label=\"web-subnet\""), "{dot}");
}

#[test]
fn hostile_names_are_escaped_in_dot_and_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let blob = r#"{"records":[{"time":"2026-01-05T10:01:00Z","category":"NetworkSecurityGroupFlowEvent","resourceId":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/R/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/N","properties":{"Version":2,"flows":[{"rule":"=HYPERLINK(\"http://x\")\"];evil[","flows":[{"mac":"000D3A000001","flowTuples":["1767607200,8.8.8.8,10.0.0.4,40001,443,T,I,A,B,,,,"]}]}]}}]}"#;
    std::fs::write(tmp.path().join("PT1H.json"), blob).unwrap();
    let d = tmp.path().to_str().unwrap();
    let dot = run_lines(&["graph", d]).join("\n");
    assert!(
        dot.contains(r#"N/=HYPERLINK(\"http://x\")\"];evil["#),
        "{dot}"
    );
    let csv = run_lines(&["flows", d]);
    assert!(
        csv[1].contains(r#""'=HYPERLINK(""http://x"")""];evil[""#),
        "{}",
        csv[1]
    );
}

// ------------------------------------------------------------------------ report ----

fn report_into(args: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let o = nsgflow()
        .arg("report")
        .args(args)
        .args(["-o", out.path().to_str().unwrap(), "--quiet"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn report_writes_every_file_and_agrees_with_summary_and_connections() {
    let out = report_into(&["fixtures/container"]);
    let d = out.path();
    for f in [
        "index.html",
        "report.json",
        "report.md",
        "rules.csv",
        "top_talkers.csv",
        "ports.csv",
        "connections.csv",
        "rejects.csv",
        "charts/decisions_per_hour.svg",
        "charts/bytes_per_hour.svg",
        "charts/rule_hits.svg",
        "charts/dest_ports.svg",
        "charts/ingress_flows.svg",
        "charts/egress_flows.svg",
    ] {
        assert!(d.join(f).is_file(), "{f}");
    }
    let r: Value = serde_json::from_str(&read(d, "report.json")).unwrap();
    assert_eq!(r["schema_version"], 1);
    let (_, s) = summary_json(&[root().join("fixtures/container").to_str().unwrap()]);
    assert_eq!(r["totals"], s["totals"]);
    assert_eq!(r["ledger"]["tuples"], s["ledger"]["tuples"]);
    assert_eq!(r["ledger"]["records"], s["ledger"]["records"]);
    assert_eq!(
        r["rules"].as_array().unwrap().len(),
        s["rules"].as_array().unwrap().len()
    );
    for (a, b) in r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .zip(s["rules"].as_array().unwrap())
    {
        assert_eq!(
            (&a["nsg"], &a["rule"], &a["tuples"], &a["bytes_src_to_dst"]),
            (&b["nsg"], &b["rule"], &b["tuples"], &b["bytes_src_to_dst"])
        );
    }
    assert_eq!(r["series_bin_ms"], 3_600_000);
    let hourly: u64 = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["allowed"].as_u64().unwrap() + h["denied"].as_u64().unwrap())
        .sum();
    assert_eq!(hourly, s["totals"]["tuples"].as_u64().unwrap());
    let conns = run_lines(&[
        "connections",
        root().join("fixtures/container").to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    assert_eq!(
        r["connections"]["total"].as_u64().unwrap() as usize,
        conns.len()
    );
    let biggest = conns
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|c| {
            // Counts are null exactly when none of the connection's tuples logged one.
            assert_eq!(
                c["bytes_src_to_dst"].is_null(),
                c["counters_logged"] == false,
                "{c}"
            );
            c["bytes_src_to_dst"].as_u64().unwrap_or(0)
                + c["bytes_dst_to_src"].as_u64().unwrap_or(0)
        })
        .max()
        .unwrap();
    assert_eq!(r["connections"]["top_by_bytes"][0]["bytes"], biggest);
    // Ingress sources are ranked over inbound tuples.
    let inbound: u64 = r["ingress"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tuples"].as_u64().unwrap())
        .sum();
    assert!(inbound <= s["totals"]["inbound"].as_u64().unwrap());
    assert_eq!(r["coverage"]["nics"].as_array().unwrap().len(), 6);
    assert_eq!(r["coverage"]["hours_spanned"], 3);
    let html = read(d, "index.html");
    assert!(html.contains("Content-Security-Policy") && html.contains("<svg"));
    // Self-contained: nothing to fetch (the only URL is the SVG namespace).
    assert!(!html.contains("<script"));
    for fetch in ["src=\"http", "href=\"http", "url(", "@import", "<link"] {
        assert!(!html.contains(fetch), "{fetch}");
    }
}

#[test]
fn report_time_series_stays_small_over_years() {
    let dir = root().join("../shared/samples");
    if !dir.is_dir() {
        eprintln!("skipping: {} is absent", dir.display());
        return;
    }
    // The samples span 2018 to 2024: hourly bins would be 56 000 rows.
    let out = report_into(&[dir.to_str().unwrap()]);
    let r: Value = serde_json::from_str(&read(out.path(), "report.json")).unwrap();
    let bins = r["series"].as_array().unwrap();
    assert!(bins.len() <= 400, "{}", bins.len());
    assert_eq!(r["series_bin_ms"], 7 * 24 * 3_600_000);
    let total: u64 = bins
        .iter()
        .map(|b| b["allowed"].as_u64().unwrap() + b["denied"].as_u64().unwrap())
        .sum();
    assert_eq!(total, r["totals"]["tuples"].as_u64().unwrap());
    assert!(
        std::fs::metadata(out.path().join("index.html"))
            .unwrap()
            .len()
            < 1_000_000
    );
}

#[test]
fn report_is_byte_identical_across_runs_and_thread_counts() {
    let a = report_into(&["fixtures", "-j", "1"]);
    let b = report_into(&["fixtures", "-j", "2"]);
    for f in [
        "report.json",
        "index.html",
        "report.md",
        "rules.csv",
        "charts/rule_hits.svg",
    ] {
        assert_eq!(read(a.path(), f), read(b.path(), f), "{f}");
    }
    assert!(!read(a.path(), "report.json").contains("generated_at"));
    let c = report_into(&["fixtures/container", "--stamp"]);
    assert!(read(c.path(), "report.json").contains("generated_at"));
}

fn hostile_container() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let rule = r#"<script>alert(1)</script>"#;
    let nsg = r#""><img src=x onerror=alert(2)>"#;
    let rec = serde_json::json!({"records": [{
    "time": "2026-01-05T10:01:00Z",
    "category": "NetworkSecurityGroupFlowEvent",
    "resourceId": format!("/SUBSCRIPTIONS/S/RESOURCEGROUPS/javascript:alert(3)/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/{nsg}"),
    "properties": {"Version": 2, "flows": [
        {"rule": rule, "flows": [{"mac": "000D3A000001", "flowTuples": [
            "1767607200,8.8.8.8,10.0.0.4,40001,443,T,I,A,B,,,,",
            "1767607230,8.8.8.8,10.0.0.4,40001,443,T,I,A,E,3,300,2,200"]}]},
        {"rule": "=HYPERLINK(\"http://evil\",\"x\")", "flows": [{"mac": "000D3A000001", "flowTuples": [
            "1767607200,10.0.0.4,9.9.9.9,40002,53,U,O,A,B,,,,"]}]},
        {"rule": "[click](javascript:alert(4))", "flows": [{"mac": "000D3A000001", "flowTuples": [
            "1767607201,10.0.0.4,9.9.9.9,40003,53,U,O,D,B,,,,"]}]}
    ]}}]});
    std::fs::write(tmp.path().join("PT1H.json"), rec.to_string()).unwrap();
    tmp
}

#[test]
fn hostile_names_appear_only_escaped_in_the_report() {
    let input = hostile_container();
    let out = report_into(&[input.path().to_str().unwrap()]);
    let d = out.path();
    let html = read(d, "index.html");
    assert!(!html.contains("<script>"), "raw script tag in HTML");
    assert!(!html.contains("<img"), "raw img tag in HTML");
    // askama writes numeric character references.
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    assert!(
        html.contains("&#34;&#62;&#60;img src=x onerror=alert(2)&#62;"),
        "{html}"
    );
    for f in ["charts/rule_hits.svg", "charts/ingress_flows.svg"] {
        let svg = read(d, f);
        assert!(!svg.contains("<script") && !svg.contains("<img"), "{f}");
    }
    let md = read(d, "report.md");
    assert!(!md.contains("<script>") && !md.contains("<img"));
    assert!(
        md.contains(r"\[click\]\(javascript:alert\(4\)\)"),
        "no live link in Markdown"
    );
    // Everything else still reads the names as written.
    let r: Value = serde_json::from_str(&read(d, "report.json")).unwrap();
    assert!(r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["rule"] == "<script>alert(1)</script>"));
}

#[test]
fn csv_cells_that_look_like_formulas_are_neutralised() {
    let input = hostile_container();
    let out = report_into(&[input.path().to_str().unwrap()]);
    let rules = read(out.path(), "rules.csv");
    assert!(
        rules.contains(r#""'=HYPERLINK(""http://evil"",""x"")""#),
        "{rules}"
    );
    assert!(
        !rules
            .lines()
            .any(|l| l.starts_with('=') || l.contains(",=")),
        "{rules}"
    );
}

#[test]
fn report_snapshots_of_each_renderer() {
    use nsgflow::aggregate::report_pass;
    use nsgflow::discover::{discover, DiscoverOptions};
    use nsgflow::report::build::{assemble, ReportContext};
    use nsgflow::report::render;
    // A fixed model: two malformed fixtures (rejects, duplicates, examples with paths).
    let inputs = [
        PathBuf::from("fixtures/malformed/bad-tuples.json"),
        PathBuf::from("fixtures/malformed/duplicates.json"),
    ];
    // cargo runs integration tests in the package root, so these relative paths resolve
    // and appear in the snapshots as written.
    let d = discover(&inputs, &DiscoverOptions::default());
    let data = report_pass(&d.blobs, &Default::default(), &|| {}, true);
    let book = nsgflow::addr::AddressBook::default();
    let findings = nsgflow::report::Findings::new(
        vec![],
        nsgflow::detect::Severity::Info,
        "the first 25% of the window".into(),
    );
    let cx = ReportContext {
        previous: None,
        findings: &findings,
        audit: None,
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        filters: vec![],
        title: None,
        generated_at: None,
        book: &book,
    };
    let r = assemble(&data, &d, &cx);
    let files = render::all_files(&r).unwrap();
    let get = |n: &str| {
        String::from_utf8(files.iter().find(|f| f.name == n).unwrap().bytes.clone()).unwrap()
    };
    insta::assert_snapshot!("report_json", get("report.json"));
    insta::assert_snapshot!("report_md", get("report.md"));
    insta::assert_snapshot!("index_html", get("index.html"));
    insta::assert_snapshot!("rules_csv", get("rules.csv"));
    insta::assert_snapshot!("top_talkers_csv", get("top_talkers.csv"));
    insta::assert_snapshot!("rejects_csv", get("rejects.csv"));
    insta::assert_snapshot!("chart_decisions_svg", get("charts/decisions_per_hour.svg"));
    insta::assert_snapshot!("chart_ingress_svg", get("charts/ingress_flows.svg"));
}

/// Renders `index.html` in headless Chromium (Debian's `chromium`, installed by `.ci/run`)
/// and checks that it renders with no console error (a CSP violation is one). Skipped with a
/// reason when Chromium is absent outside CI; in CI its absence is a failure.
#[test]
fn index_html_renders_in_headless_chromium_without_console_errors() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (.ci/run)"
        );
        eprintln!("skipping: no chromium on this machine (apt-get install chromium)");
        return;
    };
    let out = report_into(&["fixtures"]);
    let profile = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!(
            "file://{}",
            out.path().join("index.html").display()
        ))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        dom.contains("nsgflow report") && dom.contains("<svg"),
        "did not render: {log}"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Refused to") || l.contains("Uncaught"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// At 900 px the page body never scrolls sideways (wide tables scroll inside their own box),
/// on the fixture and on a generated 40-NSG container: headless Chromium lays out a copy of
/// `index.html` with a probe script (the report itself allows none: its CSP is dropped
/// from the copy only) that writes the document's width into the DOM Chromium dumps.
#[test]
fn index_html_has_no_horizontal_overflow_at_900_px() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (.ci/run)"
        );
        eprintln!("skipping: no chromium on this machine (apt-get install chromium)");
        return;
    };
    let gen = tempfile::tempdir().unwrap();
    gen_40_nsgs(gen.path());
    for input in [
        "fixtures/container".to_string(),
        gen.path().display().to_string(),
    ] {
        let out = report_into(&[&input]);
        let page = std::fs::read_to_string(out.path().join("index.html")).unwrap();
        let csp = page
            .find("<meta http-equiv=\"Content-Security-Policy\"")
            .unwrap();
        let end = csp + page[csp..].find('>').unwrap() + 1;
        let probe = "<script>addEventListener('load',()=>{document.body.setAttribute('data-width',document.documentElement.scrollWidth+'/'+innerWidth)})</script>";
        let copy = format!("{}{}{}", &page[..csp], &page[end..], probe);
        let file = out.path().join("probe.html");
        std::fs::write(&file, copy).unwrap();
        let profile = tempfile::tempdir().unwrap();
        let o = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=900,1200",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", file.display()))
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&o.stdout);
        let at = dom.find("data-width=\"").expect("the probe ran") + "data-width=\"".len();
        let (doc, view) = dom[at..dom[at..].find('"').unwrap() + at]
            .split_once('/')
            .unwrap();
        let (doc, view): (u32, u32) = (doc.parse().unwrap(), view.parse().unwrap());
        assert!((880..=900).contains(&view), "viewport {view}");
        assert!(
            doc <= view,
            "{input}: the page is {doc} px wide in a {view} px window"
        );
    }
}

/// Run nsgflow in the package root; (exit code, stdout, stderr).
fn run_in_root(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = nsgflow().args(args).current_dir(root()).output().unwrap();
    (
        out.status.code().unwrap(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under a folder, by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// For N = 1..4: every shard of `input` saved as a partial, then merged (in reverse shard
/// order) gives byte for byte the single run's `summary --format json` and report folder.
fn assert_shards_merge_to_the_single_run(input: &str) {
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name).display().to_string();
    let (code, single_summary, err) = run_in_root(&["summary", input, "--format", "json"]);
    assert!(code == 0 || code == 3, "{err}");
    let (code, _, err) = run_in_root(&["report", input, "-o", &w("single"), "--quiet"]);
    assert!(code == 0 || code == 3, "{err}");
    let single = tree(&work.path().join("single"));
    assert!(single.len() >= 14, "{:?}", single.keys());
    for n in 1..=4 {
        let mut parts = Vec::new();
        let mut blobs = 0;
        for k in (1..=n).rev() {
            let part = w(&format!("r{k}of{n}.part"));
            let shard = format!("{k}/{n}");
            let out = w(&format!("shard{k}of{n}"));
            let (code, _, err) = run_in_root(&[
                "report",
                input,
                "-o",
                &out,
                "--quiet",
                "--shard",
                &shard,
                "--save-partial",
                &part,
            ]);
            assert!(code == 0 || code == 3 || code == 1, "{shard}: {err}");
            let head = std::fs::read(&part).unwrap();
            let line = head.split(|b| *b == b'\n').next().unwrap();
            let h: Value = serde_json::from_slice(line).unwrap();
            assert_eq!(h["shard"]["k"], k, "{shard}");
            blobs += h["blobs"].as_array().unwrap().len();
            parts.push(part);
        }
        let mut args = vec!["merge"];
        args.extend(parts.iter().map(String::as_str));
        let merged = w(&format!("merged{n}"));
        let mut to_dir = args.clone();
        to_dir.extend(["-o", merged.as_str(), "--quiet"]);
        let (code, _, err) = run_in_root(&to_dir);
        assert!(code == 0 || code == 3, "merge of {n}: {err}");
        let got = tree(Path::new(&merged));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            single.keys().collect::<Vec<_>>()
        );
        for (name, bytes) in &single {
            assert!(
                got[name] == *bytes,
                "{input}: {name} differs after {n} shards + merge"
            );
        }
        args.extend(["--format", "json"]);
        let (_, summary, err) = run_in_root(&args);
        assert!(
            summary == single_summary,
            "{input}: summary differs after {n} shards: {err}"
        );
        let v: Value = serde_json::from_slice(&summary).unwrap();
        assert_eq!(
            v["ledger"]["blobs"], blobs as u64,
            "every blob in one shard"
        );
    }
}

#[test]
fn shards_and_merge_give_the_single_run_byte_for_byte_on_the_fixtures() {
    assert_shards_merge_to_the_single_run("fixtures/container");
}

#[test]
fn shards_and_merge_give_the_single_run_byte_for_byte_on_a_generated_container() {
    let c = gen_container(&["--family", "mixed", "--nsgs", "2", "--nics-per-nsg", "3"]);
    assert_shards_merge_to_the_single_run(c.path().to_str().unwrap());
}

#[test]
fn shards_split_whole_nics_balanced_by_bytes_and_cover_every_blob_once() {
    let c = gen_container(&["--nsgs", "3", "--nics-per-nsg", "3"]);
    let d = c.path().to_str().unwrap();
    let (_, all) = summary_json(&[d]);
    let mut seen = std::collections::BTreeSet::new();
    let mut bytes = Vec::new();
    let work = tempfile::tempdir().unwrap();
    for k in 1..=3 {
        let part = work.path().join(format!("{k}.part"));
        let (_, s) = summary_json(&[
            d,
            "--shard",
            &format!("{k}/3"),
            "--save-partial",
            part.to_str().unwrap(),
        ]);
        bytes.push(s["ledger"]["bytes"].as_u64().unwrap());
        let head = std::fs::read(&part).unwrap();
        let h: Value = serde_json::from_slice(head.split(|b| *b == b'\n').next().unwrap()).unwrap();
        for b in h["blobs"].as_array().unwrap() {
            let p = b["path"].as_str().unwrap().to_string();
            let mac = p
                .split("macAddress=")
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap();
            seen.insert((mac.to_string(), k));
            assert!(b["size"].as_u64().unwrap() > 0 && b["mtime_ms"].as_i64().is_some());
        }
    }
    let macs: BTreeMap<String, Vec<i32>> = seen.iter().fold(BTreeMap::new(), |mut m, (mac, k)| {
        m.entry(mac.clone()).or_default().push(*k);
        m
    });
    assert_eq!(macs.len(), 9);
    // A NIC's blobs are all in one shard.
    assert!(macs.values().all(|ks| ks.len() == 1), "{macs:?}");
    assert_eq!(
        bytes.iter().sum::<u64>(),
        all["ledger"]["bytes"].as_u64().unwrap()
    );
    // 9 NICs of about equal size over 3 shards: 3 each, within a NIC's size of each other.
    let (lo, hi) = (bytes.iter().min().unwrap(), bytes.iter().max().unwrap());
    assert!(hi - lo < hi / 3, "{bytes:?}");
    // The same split on a second run.
    let (_, again) = summary_json(&[d, "--shard", "2/3"]);
    assert_eq!(again["ledger"]["bytes"].as_u64().unwrap(), bytes[1]);
}

#[test]
fn merge_refuses_partials_it_cannot_merge_with_a_clear_message() {
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name).display().to_string();
    let save = |name: &str, extra: &[&str]| {
        let mut args = vec!["summary", "fixtures/container", "--save-partial"];
        let p = w(name);
        args.push(&p);
        args.extend(extra);
        let (code, _, err) = run_in_root(&args);
        assert_eq!(code, 0, "{err}");
    };
    save("all.part", &[]);
    save("web.part", &["--nsg", "web-nsg", "--shard", "1/2"]);
    save("half.part", &["--shard", "1/2"]);
    save("half-again.part", &["--shard", "1/2"]);
    save("other-half.part", &["--shard", "2/2"]);
    let merge = |args: &[&str]| {
        let mut a = vec!["merge"];
        let paths: Vec<String> = args.iter().map(|x| w(x)).collect();
        a.extend(paths.iter().map(String::as_str));
        a.extend(["--format", "json"]);
        run_in_root(&a)
    };
    // Different filters.
    let (code, _, err) = merge(&["web.part", "other-half.part"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("different options (filters: \"--nsg web-nsg\""),
        "{err}"
    );
    // The same blob in two partials.
    let (code, _, err) = merge(&["half.part", "half-again.part"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("both read") && err.contains("PT1H.json"),
        "{err}"
    );
    // Another format version: refused before the body is read.
    let bytes = std::fs::read(w("half.part")).unwrap();
    let text = String::from_utf8_lossy(&bytes[..200]).into_owned();
    let version = format!("\"format_version\":{},", nsgflow::state::FORMAT_VERSION);
    let mut edited = bytes.clone();
    let at = text.find(&version).expect("the version") + "\"format_version\":".len();
    edited[at] = b'9';
    std::fs::write(w("v9.part"), edited).unwrap();
    let (code, _, err) = merge(&["v9.part", "other-half.part"]);
    assert_eq!(code, 2);
    assert!(err.contains("partial format version 9"), "{err}");
    // Not a partial at all.
    let (code, _, err) = merge(&["../../fixtures-not-here"]);
    assert_eq!(code, 2, "{err}");
    let not = root().join("fixtures/malformed/bom.json");
    let (code, _, err) = run_in_root(&["merge", not.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not an nsgflow partial file"), "{err}");
    // A damaged body.
    std::fs::write(w("cut.part"), &bytes[..bytes.len() - 40]).unwrap();
    let (code, _, err) = merge(&["cut.part"]);
    assert_eq!(code, 2);
    assert!(err.contains("damaged partial file"), "{err}");
    // Summary partials cannot make a report.
    let out = w("report");
    let (a, b) = (w("half.part"), w("other-half.part"));
    let (code, _, err) = run_in_root(&["merge", &a, &b, "-o", &out]);
    assert_eq!(code, 2);
    assert!(
        err.contains("needs partials from `report --save-partial`"),
        "{err}"
    );
    // The two halves merge in either order to the single run.
    let (_, single, _) = run_in_root(&["summary", "fixtures/container", "--format", "json"]);
    let (code, ab, _) = merge(&["half.part", "other-half.part"]);
    let (_, ba, _) = merge(&["other-half.part", "half.part"]);
    assert_eq!(code, 0);
    assert!(ab == ba && ab == single, "a+b == b+a == one run");
}

/// A folder whose largest (and first by path) blob rejects tuples, beside five good blobs
/// without a NIC in their path (each its own group).
fn strict_container() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = std::fs::read(root().join("fixtures/malformed/bad-tuples.json")).unwrap();
    bad.extend(std::iter::repeat_n(b' ', 200_000));
    std::fs::write(tmp.path().join("a-bad.json"), bad).unwrap();
    // Five different blobs: copies of one would be read once (duplicate_blobs).
    let good: Vec<_> = walkdir::WalkDir::new(root().join("fixtures/container"))
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .take(5)
        .collect();
    for (i, g) in good.iter().enumerate() {
        std::fs::copy(g.path(), tmp.path().join(format!("g{}.json", i + 1))).unwrap();
    }
    tmp
}

#[test]
fn strict_stops_every_command_at_the_first_loss_and_counts_what_it_left_unread() {
    let c = strict_container();
    let d = c.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("r");
    let commands: Vec<Vec<&str>> = vec![
        vec!["summary", "--format", "json"],
        vec!["top", "--by", "src"],
        vec!["top", "--by", "connection", "--metric", "bytes"],
        vec!["flows"],
        vec!["timeline"],
        vec!["connections"],
        vec!["graph"],
        vec!["report", "--quiet", "-o", o.to_str().unwrap()],
    ];
    for cmd in commands {
        let mut args = vec![cmd[0], d, "--strict", "-j", "1"];
        args.extend(&cmd[1..]);
        let (code, stdout, err) = run_in_root(&args);
        assert_eq!(code, 3, "{cmd:?}: {err}");
        assert!(
            err.contains("stopped early (--strict)") && err.contains("5 blobs left unread"),
            "{cmd:?}: {err}"
        );
        if cmd[0] == "summary" {
            let v: Value = serde_json::from_slice(&stdout).unwrap();
            assert_eq!(v["ledger"]["blobs"], 1);
            assert_eq!(v["ledger"]["blobs_unread"], 5);
            assert_eq!(v["ledger"]["tuples_rejected"], 13);
        }
        if cmd[0] == "flows" {
            // Only the bad blob's two accepted tuples were written.
            assert_eq!(String::from_utf8(stdout).unwrap().lines().count(), 3);
        }
    }
    // Without --strict every blob is read.
    let (code, stdout, _) = run_in_root(&["summary", d, "--format", "json"]);
    assert_eq!(code, 3);
    let v: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(
        (
            v["ledger"]["blobs"].as_u64(),
            v["ledger"]["blobs_unread"].as_u64()
        ),
        (Some(6), Some(0))
    );
}

#[test]
fn unusable_outputs_exit_2_before_any_input_is_read() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    // A report into a path that is a file; the input does not even exist, so the output
    // was checked first.
    let (code, _, err) = run_in_root(&["report", "/no/such/input", "-o", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("-o") && !err.contains("no flow-log blobs"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    // A report through a symbolic link.
    let link = work.path().join("link");
    std::os::unix::fs::symlink(work.path(), &link).unwrap();
    let (code, _, err) = run_in_root(&["report", "/no/such/input", "-o", link.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("symbolic link"), "{err}");
    // A partial into a folder that does not exist.
    let (code, _, err) = run_in_root(&[
        "summary",
        "/no/such/input",
        "--save-partial",
        "/no/such/dir/x.part",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--save-partial /no/such/dir/x.part"), "{err}");
    // A partial over a file of the user's: refused, the file kept; over an earlier partial:
    // replaced.
    let (code, _, err) = run_in_root(&[
        "summary",
        "/no/such/input",
        "--save-partial",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("is not an nsgflow partial"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let part = work.path().join("p.part");
    for _ in 0..2 {
        let (code, _, err) = run_in_root(&[
            "summary",
            "fixtures/container",
            "--save-partial",
            part.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    // Bad shard values are usage errors.
    for bad in ["0/2", "3/2", "2", "a/b"] {
        let (code, _, err) = run_in_root(&["summary", "fixtures/container", "--shard", bad]);
        assert_eq!(code, 2, "{bad}");
        assert!(err.contains("--shard"), "{err}");
    }
    // A shard with no blob left reads nothing: exit 1, and says which shard.
    let one = root().join("fixtures/malformed/bom.json");
    let (code, _, err) = run_in_root(&["summary", one.to_str().unwrap(), "--shard", "2/2"]);
    assert_eq!(code, 1);
    assert!(err.contains("in shard 2/2"), "{err}");
}

/// (key, tuples, bytes) of each row of a JSON list.
fn rows_of(v: &Value, key: &str) -> Vec<(String, u64, u64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[key].as_str().unwrap().to_string(),
                r["tuples"].as_u64().unwrap(),
                r["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn report_top_and_graph_agree_on_every_top_list_row_for_row() {
    let c = gen_container(&["--nsgs", "2", "--nics-per-nsg", "2"]);
    for input in [root().join("fixtures/container"), c.path().to_path_buf()] {
        let d = input.to_str().unwrap();
        let out = report_into(&[d]);
        let r: Value = serde_json::from_str(&read(out.path(), "report.json")).unwrap();
        for (section, dir) in [("ingress", "in"), ("egress", "out")] {
            for (list, by, key) in [
                ("sources", "src", "key"),
                ("destinations", "dst", "key"),
                ("pairs", "pair", "key"),
                ("ports", "dport", "port"),
            ] {
                let top = run_json(&[
                    "top",
                    d,
                    "--by",
                    by,
                    "--direction",
                    dir,
                    "-n",
                    "15",
                    "--format",
                    "json",
                ]);
                let want = rows_of(&top["rows"], "key");
                assert!(!want.is_empty(), "{section} {list}");
                assert_eq!(
                    rows_of(&r[section][list], key),
                    want,
                    "{d}: {section} {list}"
                );
            }
            // The flow pictures' edges are the graph's heaviest edges.
            let g = run_json(&[
                "graph",
                d,
                "--direction",
                dir,
                "--top",
                "15",
                "--format",
                "json",
            ]);
            let names: Vec<&str> = g["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["name"].as_str().unwrap())
                .collect();
            let edges: Vec<(String, u64, u64)> = g["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let (s, t) = (e["source"].as_u64().unwrap(), e["target"].as_u64().unwrap());
                    (
                        format!("{} -> {}", names[s as usize], names[t as usize]),
                        e["tuples"].as_u64().unwrap(),
                        e["bytes"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                rows_of(&r[section]["pairs"], "key"),
                edges,
                "{d}: {section} edges"
            );
        }
        let all_ports = run_json(&["top", d, "--by", "dport", "-n", "20", "--format", "json"]);
        assert_eq!(
            rows_of(&r["ports"], "port"),
            rows_of(&all_ports["rows"], "key")
        );
    }
}

/// A generated container with every kind of attack, its ground truth, and a clean twin.
fn attack_containers() -> (tempfile::TempDir, Value, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let gen = |name: &str, attacks: bool| {
        let out = work.path().join(name);
        let mut cmd = nsgflow();
        cmd.args([
            "gen",
            "--out",
            out.to_str().unwrap(),
            "--hours",
            "4",
            "--seed",
            "5",
        ]);
        if attacks {
            cmd.arg("--attacks");
        }
        cmd.assert().success();
    };
    gen("atk", true);
    gen("clean", false);
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("atk.attacks.json")).unwrap(),
    )
    .unwrap();
    let clean = tempfile::tempdir().unwrap();
    std::fs::rename(work.path().join("clean"), clean.path().join("c")).unwrap();
    (work, truth, clean)
}

fn anomalies_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["anomalies", dir.to_str().unwrap(), "--format", "json"];
    args.extend(extra);
    run_json(&args)
}

#[test]
fn a_baseline_folder_and_its_report_partial_give_the_same_findings() {
    let (work, truth, clean) = attack_containers();
    let atk = work.path().join("atk");
    let c = clean.path().join("c");
    let by_folder = anomalies_json(&atk, &["--baseline", c.to_str().unwrap()]);
    let part = clean.path().join("base.part");
    let out = clean.path().join("r");
    let (code, _, err) = run_in_root(&[
        "report",
        c.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--quiet",
        "--save-partial",
        part.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let by_partial = anomalies_json(&atk, &["--baseline", part.to_str().unwrap()]);
    let key = |v: &Value| -> Vec<(String, String, String)> {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["id"].to_string(),
                    f["severity"].to_string(),
                    f["score"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(key(&by_folder), key(&by_partial));
    // The injected new talker is absent from the clean traffic, and the finding says what it
    // was compared with.
    let t = truth
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "new_talker")
        .unwrap();
    for (v, says) in [
        (&by_folder, "absent from the baseline input"),
        (&by_partial, "absent from the baseline partial"),
    ] {
        let f = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "new_talker" && f["subjects"]["dst"] == t["dst"])
            .unwrap_or_else(|| panic!("no new talker: {v}"));
        assert_eq!(f["severity"], "medium", "{f}");
        assert!(f["baseline"].as_str().unwrap().starts_with(says), "{f}");
    }
    // The clean container's own traffic is known: fewer new addresses than without it.
    let alone = anomalies_json(&atk, &[]);
    let quiet = |v: &Value| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "new_talker" && f["severity"] == "info")
            .map(|f| f["score"].as_f64().unwrap())
            .unwrap_or(0.0)
    };
    assert!(
        quiet(&by_folder) < quiet(&alone),
        "{} vs {}",
        quiet(&by_folder),
        quiet(&alone)
    );
    // A summary partial has no detector state.
    let spart = clean.path().join("s.part");
    let (code, _, _) = run_in_root(&[
        "summary",
        c.to_str().unwrap(),
        "--save-partial",
        spart.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let (code, _, err) = run_in_root(&[
        "anomalies",
        atk.to_str().unwrap(),
        "--baseline",
        spart.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("a summary partial holds no detector state"),
        "{err}"
    );
}

/// The tuple text a finding's evidence names: record `record` of the blob at `path`, tuple
/// `tuple` of rule `rule`'s `flowTuples` (NSG logs).
fn evidence_tuple(e: &Value) -> String {
    let blob: Value =
        serde_json::from_str(&std::fs::read_to_string(e["path"].as_str().unwrap()).unwrap())
            .unwrap();
    let record = &blob["records"][e["record"].as_u64().unwrap() as usize];
    let rule = record["properties"]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == e["rule"])
        .unwrap_or_else(|| panic!("no rule {} in the record", e["rule"]));
    rule["flows"][0]["flowTuples"][e["tuple"].as_u64().unwrap() as usize]
        .as_str()
        .unwrap_or_else(|| panic!("no tuple at {e}"))
        .to_string()
}

/// Each attack of `truth` has a finding of its kind at medium or above, with its subjects, in
/// its window, that explains itself (the finding contract).
fn assert_recall(findings: &[Value], truth: &Value) {
    let truth = truth.as_array().unwrap();
    assert_eq!(truth.len(), 8);
    let ms = |s: &Value| ms_of(s);
    for t in truth {
        let kind = t["kind"].as_str().unwrap();
        let hit = findings.iter().find(|f| {
            let s = &f["subjects"];
            let same = |k: &str| {
                let want = t[k].as_str().unwrap_or("");
                want.is_empty() || s[k].as_str().is_none() || s[k].as_str() == Some(want)
            };
            let (first, last) = (ms(&f["window"]["first"]), ms(&f["window"]["last"]));
            f["kind"] == kind
                && same("src")
                && same("dst")
                && first <= t["last_ms"].as_i64().unwrap()
                && last >= t["first_ms"].as_i64().unwrap()
        });
        let f = hit.unwrap_or_else(|| panic!("{kind} not found: {t}"));
        assert!(
            ["medium", "high", "critical"].contains(&f["severity"].as_str().unwrap()),
            "{f}"
        );
        // The contract: every finding explains itself.
        for k in [
            "id",
            "kind",
            "severity",
            "score",
            "title",
            "subjects",
            "window",
            "metrics",
            "threshold",
            "evidence",
        ] {
            assert!(!f[k].is_null(), "{kind}: {k}");
        }
        assert!(!f["threshold"].as_str().unwrap().is_empty());
        if kind != "beacon" || !f["evidence"].as_array().unwrap().is_empty() {
            let e = &f["evidence"][0];
            assert!(
                e["path"].as_str().unwrap().ends_with("PT1H.json"),
                "{kind}: {e}"
            );
            // The evidence opens on a tuple of the attack: its source or its destination.
            let tuple = evidence_tuple(e);
            let fields: Vec<&str> = tuple.split(',').collect();
            assert!(
                fields[1] == t["src"] || fields[2] == t["dst"],
                "{kind}: evidence {e} is {tuple}, not of {t}"
            );
        }
    }
}

#[test]
fn every_injected_attack_is_found_at_medium_or_above_with_its_subjects_and_window() {
    let (work, truth, _) = attack_containers();
    let v = anomalies_json(&work.path().join("atk"), &["--min-severity", "medium"]);
    let findings = v["findings"].as_array().unwrap();
    assert_recall(findings, &truth);
    // Exact subjects of a few.
    let by = |kind: &str| findings.iter().find(|f| f["kind"] == kind).unwrap();
    assert_eq!(by("port_scan")["subjects"]["src"], "203.0.113.66");
    assert_eq!(by("port_scan")["metrics"]["distinct_ports"], 300);
    assert_eq!(by("horizontal_sweep")["subjects"]["dport"], "5985");
    assert_eq!(by("horizontal_sweep")["metrics"]["hosts"], 6);
    assert_eq!(by("beacon")["subjects"]["dst"], "198.51.100.77");
    assert_eq!(
        by("exposure")["subjects"]["rule"],
        "UserRule_AllowRdpFromAnywhere"
    );
    assert_eq!(by("exposure")["metrics"]["sources"], 30);
    assert_eq!(by("lateral_movement")["metrics"]["hosts_in_window"], 5);
    assert_eq!(
        by("denied_spike")["subjects"]["hour"],
        "2026-01-05T02:00:00.000Z"
    );
    assert_eq!(by("exfiltration")["metrics"]["bytes"], 3_200_000_000u64);
    // Sorted by severity, then score.
    let rank = |s: &str| {
        ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    let sev: Vec<usize> = findings
        .iter()
        .map(|f| rank(f["severity"].as_str().unwrap()))
        .collect();
    assert!(sev.windows(2).all(|w| w[0] >= w[1]), "{sev:?}");
    assert_eq!(v["checked"].as_array().unwrap().len(), 8);
    assert!(v["ledger"]["tuples"].as_u64().unwrap() > 10_000);
}

/// `gen --size` scales the background (scanners' denied tuples included) with the size; the
/// injected attacks must still stand out of it. Before the denied spike was scaled with the
/// background (`gen::attacks::spike_attempts`), its 2,000 tuples were lost in an NSG's 4,600
/// an hour here and no `denied_spike` fired.
#[test]
fn every_injected_attack_is_found_in_a_busier_container_too() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("big");
    nsgflow()
        .args(["gen", "--out", out.to_str().unwrap()])
        .args(["--size", "8M", "--nsgs", "2", "--nics-per-nsg", "3"])
        .args(["--hours", "4", "--seed", "3", "--attacks"])
        .assert()
        .success();
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(work.path().join("big.attacks.json")).unwrap(),
    )
    .unwrap();
    let v = anomalies_json(&out, &["--min-severity", "medium"]);
    let findings = v["findings"].as_array().unwrap();
    assert_recall(findings, &truth);
    let spike = findings
        .iter()
        .find(|f| f["kind"] == "denied_spike")
        .unwrap();
    assert_eq!(spike["subjects"]["hour"], "2026-01-05T02:00:00.000Z");
    assert_eq!(spike["subjects"]["nsg"], "APP-NSG");
    assert_eq!(spike["metrics"]["denied"], 22235);
    assert_eq!(spike["metrics"]["median"], 4629.0);
}

#[test]
fn a_clean_container_has_nothing_high_and_at_most_two_medium_findings() {
    let (_, _, clean) = attack_containers();
    let v = anomalies_json(&clean.path().join("c"), &[]);
    let f = v["findings"].as_array().unwrap();
    let count = |s: &str| f.iter().filter(|x| x["severity"] == s).count();
    assert_eq!(count("critical") + count("high"), 0, "{v:#}");
    assert!(count("medium") <= 2, "{v:#}");
    // Background scanning is summarised, not listed scanner by scanner.
    assert!(f.iter().filter(|x| x["kind"] == "horizontal_sweep").count() <= 1);
}

#[test]
fn fail_on_exits_4_config_changes_thresholds_and_output_is_reproducible() {
    let (work, _, clean) = attack_containers();
    let atk = work.path().join("atk");
    let d = atk.to_str().unwrap();
    nsgflow()
        .args(["anomalies", d, "--fail-on", "high"])
        .assert()
        .code(4);
    let c = clean.path().join("c");
    nsgflow()
        .args(["anomalies", c.to_str().unwrap(), "--fail-on", "high"])
        .assert()
        .code(0);
    nsgflow()
        .args(["anomalies", d, "--fail-on", "bad"])
        .assert()
        .code(2);
    // A config that asks beacons for more connections than the injected one has.
    let cfg = work.path().join("detect.toml");
    std::fs::write(&cfg, "[beacon]\nmin_connections = 5000\n").unwrap();
    let v = anomalies_json(&atk, &["--config", cfg.to_str().unwrap()]);
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["kind"] != "beacon"));
    std::fs::write(&cfg, "[beacon]\nmin_conections = 5\n").unwrap();
    let out = nsgflow()
        .args(["anomalies", d, "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("min_conections"));
    // An allow-listed scanner is no longer reported.
    std::fs::write(&cfg, "allow = [\"203.0.113.66\"]\n").unwrap();
    let v = anomalies_json(&atk, &["--config", cfg.to_str().unwrap()]);
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["subjects"]["src"] != "203.0.113.66"));
    // Byte-identical across runs and thread counts.
    let run = |j: &str| {
        nsgflow()
            .args(["anomalies", d, "--format", "json", "-j", j])
            .output()
            .unwrap()
            .stdout
    };
    let one = run("1");
    assert_eq!(one, run("2"));
    assert_eq!(one, run("2"));
}

#[test]
fn the_report_opens_with_its_findings_in_every_format() {
    let (work, _, clean) = attack_containers();
    let out = report_into(&[work.path().join("atk").to_str().unwrap()]);
    let html = read(out.path(), "index.html");
    let (f, l) = (
        html.find("<h2>Findings</h2>").unwrap(),
        html.find("<h2>Ledger and coverage</h2>").unwrap(),
    );
    assert!(f < l);
    assert!(html.contains("203.0.113.66 probed 300 ports of 10.0.0.4"));
    let md = read(out.path(), "report.md");
    assert!(md.find("## Findings").unwrap() < md.find("## Ledger and coverage").unwrap());
    let csv = read(out.path(), "findings.csv");
    assert!(
        csv.starts_with("severity,kind,score,title,subjects,first,last,threshold,evidence,id\n")
    );
    assert!(csv.lines().any(|l| l.starts_with("high,beacon,")));
    let r: Value = serde_json::from_str(&read(out.path(), "report.json")).unwrap();
    let items = r["findings"]["items"].as_array().unwrap();
    let direct = anomalies_json(&work.path().join("atk"), &[]);
    assert_eq!(
        items,
        direct["findings"].as_array().unwrap(),
        "report and anomalies agree"
    );
    // No placeholder when nothing is found: say so and what was checked.
    let out = report_into(&[
        clean.path().join("c").to_str().unwrap(),
        "--min-severity",
        "high",
    ]);
    let html = read(out.path(), "index.html");
    assert!(html.contains("No findings at or above high. Checked: port_scan, horizontal_sweep"));
    // With --no-findings the section says the detectors did not run, and how to run them.
    let out = report_into(&[clean.path().join("c").to_str().unwrap(), "--no-findings"]);
    let html = read(out.path(), "index.html");
    assert!(html.contains("The detectors did not run for this report (<code>--no-findings</code>)"));
    let r: Value = serde_json::from_str(&read(out.path(), "report.json")).unwrap();
    assert_eq!(r["findings"]["ran"], false);
    // --fail-on needs them.
    let (code, _, err) = run_in_root(&[
        "report",
        clean.path().join("c").to_str().unwrap(),
        "-o",
        out.path().join("x").to_str().unwrap(),
        "--no-findings",
        "--fail-on",
        "high",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--fail-on needs the detectors"), "{err}");
}

#[test]
fn audit_of_the_bundled_container_against_its_definitions_finds_one_of_each() {
    let v = run_json(&[
        "audit",
        "fixtures/container",
        "--rules",
        "fixtures/definitions/az-nsg-list.json",
        "--rules",
        "fixtures/definitions/arm-test-rg.json",
        "--format",
        "json",
    ]);
    let got: Vec<(String, String, String, String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            let related: Vec<&str> = f["related_rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            (
                s("severity"),
                s("kind"),
                format!("{}/{}", s("resource_group"), s("nsg")),
                s("rule"),
                related.join(","),
            )
        })
        .collect();
    let want = [
        (
            "high",
            "overly_permissive",
            "RG-PROD-APP/APP-NSG",
            "AllowRdpLegacy",
            "",
        ),
        (
            "high",
            "shadowed",
            "RG-PROD-APP/APP-NSG",
            "DenyHttpsFromScanners",
            "AllowHttps",
        ),
        (
            "high",
            "overly_permissive",
            "RG-PROD-DATA/DB-NSG",
            "AllowMgmtRange",
            "",
        ),
        (
            "high",
            "shadowed",
            "RG-PROD-DATA/DB-NSG",
            "DenyTelnet",
            "AllowMgmtRange",
        ),
        (
            "medium",
            "undefined_rule",
            "RG-PROD-WEB/WEB-NSG",
            "UserRule_DenySmbOutbound",
            "",
        ),
        (
            "low",
            "least_privilege",
            "RG-PROD-APP/APP-NSG",
            "AllowSshFromBastion",
            "",
        ),
        (
            "low",
            "redundant",
            "RG-PROD-APP/APP-NSG",
            "AllowHttpsFromVnet",
            "AllowHttps",
        ),
        (
            "low",
            "unused",
            "RG-PROD-APP/APP-NSG",
            "AllowHttpsFromVnet",
            "",
        ),
        ("low", "unused", "RG-PROD-APP/APP-NSG", "AllowRdpLegacy", ""),
        (
            "low",
            "unused",
            "RG-PROD-APP/APP-NSG",
            "DenyHttpsFromScanners",
            "",
        ),
        ("low", "no_logs", "RG-PROD-DATA/DB-NSG", "", ""),
        ("low", "unused", "RG-PROD-DATA/DB-NSG", "AllowMgmtRange", ""),
        ("low", "unused", "RG-PROD-DATA/DB-NSG", "AllowRdpLegacy", ""),
        ("low", "unused", "RG-PROD-DATA/DB-NSG", "AllowWebAlt", ""),
        ("low", "unused", "RG-PROD-DATA/DB-NSG", "DenyTelnet", ""),
        ("low", "no_logs", "RG-PROD-WEB/SPARE-NSG", "", ""),
        ("low", "unused", "RG-PROD-WEB/WEB-NSG", "AllowRdpLegacy", ""),
        // The same name in another resource group is another NSG.
        ("low", "no_logs", "RG-TEST/APP-NSG", "", ""),
        (
            "info",
            "default_rule_traffic",
            "RG-PROD-DATA/DB-NSG",
            "AllowInternetOutBound",
            "",
        ),
        (
            "info",
            "partially_shadowed",
            "RG-PROD-DATA/DB-NSG",
            "AllowWebAlt",
            "AllowHttps",
        ),
        (
            "info",
            "unresolvable",
            "RG-PROD-WEB/WEB-NSG",
            "AllowRdpLegacy",
            "",
        ),
        (
            "info",
            "unresolvable",
            "RG-PROD-WEB/WEB-NSG",
            "AllowSshFromBastion",
            "",
        ),
    ];
    let want: Vec<(String, String, String, String, String)> = want
        .iter()
        .map(|w| (w.0.into(), w.1.into(), w.2.into(), w.3.into(), w.4.into()))
        .collect();
    assert_eq!(got, want);
    // Hits join case-insensitively: NSG logs say APP-NSG, VNet logs app-nsg; both count.
    let rule = |nsg: &str, name: &str| {
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["nsg"] == nsg && r["rule"] == name)
            .unwrap_or_else(|| panic!("{nsg} {name}"))
            .clone()
    };
    let https = rule("APP-NSG", "AllowHttps");
    assert_eq!(https["hits"], 32 + 32);
    assert_eq!(https["log_name"], "UserRule_AllowHttps");
    assert_eq!(https["priority"], 100);
    assert_eq!(rule("DB-NSG", "DenySmbOutbound")["denied"], 4 + 8);
    assert_eq!(rule("APP-NSG", "DenyAllInBound")["hits"], 31 + 28);
    assert_eq!(rule("APP-NSG", "AllowRdpLegacy")["hits"], 0);
    // The contract's other parts.
    assert_eq!(v["coverage"]["RG-PROD-APP/APP-NSG"]["hours_in_window"], 6);
    assert_eq!(v["coverage"]["RG-PROD-APP/APP-NSG"]["share"], 1.0);
    // The migration hour is logged by both families on both of APP-NSG's NICs.
    assert_eq!(
        v["coverage"]["RG-PROD-APP/APP-NSG"]["double_logged_nic_hours"],
        2
    );
    assert_eq!(
        v["coverage"]["RG-PROD-APP/APP-NSG"]["double_logged"][0]["hour"],
        "2026-01-05T01:00:00.000Z"
    );
    let f = |kind: &str, nsg: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == kind && f["nsg"] == nsg)
            .unwrap()
            .clone()
    };
    // DB-NSG lists three NICs; the logs show two.
    assert_eq!(f("no_logs", "DB-NSG")["evidence"]["nics_defined"], 3);
    assert_eq!(f("no_logs", "DB-NSG")["evidence"]["nics_logged"], 2);
    // Which part of a partly shadowed rule the rules above take.
    assert!(f("partially_shadowed", "DB-NSG")["message"]
        .as_str()
        .unwrap()
        .contains("(destination ports 443 of its 443-444)"));
    assert_eq!(v["assumptions"]["virtual_network"][0], "10.0.0.0/8");
    assert_eq!(v["window"]["first"], "2026-01-05T00:00:12.000Z");
    let shadowed: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "shadowed")
        .collect();
    assert_eq!(
        shadowed[1]["evidence"]["opposite_access"][0],
        "AllowMgmtRange"
    );
    assert_eq!(shadowed[1]["evidence"]["decided_by_the_shadowing_rules"], 0);
    // The deny of 185.0.0.0/8 on 443 never happens: the pass counted the tuples it matches
    // that AllowHttps allowed instead (2, as a flows-export recount says), with examples.
    let deny = shadowed[0];
    assert_eq!(deny["evidence"]["decided_by_the_shadowing_rules"], 2);
    assert_eq!(deny["evidence"]["examples"][0]["record"], 4);
    assert_eq!(
        deny["evidence"]["examples"][0]["time"],
        "2026-01-05T02:14:12.870Z"
    );
    assert!(deny["message"].as_str().unwrap().ends_with(
        "its intent never happens; 2 logged tuples it matches were allowed by them instead"
    ));
    // The tighter rule, ready to apply: the two bastion hosts seen, the one port.
    let lp = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "least_privilege")
        .unwrap();
    assert_eq!(
        lp["suggestion"]["az"],
        "az network nsg rule update --resource-group RG-PROD-APP --nsg-name APP-NSG --name AllowSshFromBastion --source-address-prefixes 10.255.0.4/31 --destination-port-ranges 22"
    );
    assert_eq!(lp["evidence"]["observed_sources"], 2);
    // Reproducible: the same bytes at any thread count.
    let at = |j: &str| {
        run_in_root(&[
            "audit",
            "fixtures/container",
            "--rules",
            "fixtures/definitions/az-nsg-list.json",
            "--format",
            "json",
            "-j",
            j,
        ])
        .1
    };
    assert_eq!(at("1"), at("2"));
    // --fail-on and the table form.
    let (code, out, _) = run_in_root(&[
        "audit",
        "fixtures/container",
        "--rules",
        "fixtures/definitions/az-nsg-list.json",
        "--fail-on",
        "high",
    ]);
    assert_eq!(code, 4);
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("severity"), "{out}");
    assert!(out.contains("DenyTelnet"));
}

#[test]
fn audit_without_definitions_lists_hits_and_says_what_it_cannot_decide() {
    let (code, out, _) = run_in_root(&["audit", "fixtures/container"]);
    assert_eq!(code, 0);
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("definitions not given (--rules)"), "{out}");
    let v = run_json(&["audit", "fixtures/container", "--format", "json"]);
    assert_eq!(v["definitions_given"], false);
    assert!(v["findings"].as_array().unwrap().is_empty());
    let idle = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nsg"] == "APP-NSG" && r["rule"] == "UserRule_AllowRdpLegacy")
        .unwrap();
    assert_eq!(idle["hits"], 0);
    // A malformed definitions file: exit 2, naming the file and the JSON path.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name": "X", "securityRules": [{"name": "r", "priority": 100, "direction": "In", "access": "Allow", "protocol": "Tcp"}]}"#,
    )
    .unwrap();
    let (code, _, err) = run_in_root(&[
        "audit",
        "fixtures/container",
        "--rules",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.json: $.securityRules[0].direction: \"in\": Inbound or Outbound"),
        "{err}"
    );
}

#[test]
fn report_with_rules_has_an_audit_section_and_audit_csv_agreeing_with_audit() {
    let out = report_into(&[
        "fixtures/container",
        "--rules",
        "fixtures/definitions/az-nsg-list.json",
    ]);
    let alone = run_json(&[
        "audit",
        "fixtures/container",
        "--rules",
        "fixtures/definitions/az-nsg-list.json",
        "--format",
        "json",
    ]);
    let r: Value = serde_json::from_str(&read(out.path(), "report.json")).unwrap();
    assert_eq!(r["audit"]["findings"], alone["findings"]);
    assert_eq!(r["audit"]["rules"], alone["rules"]);
    let html = read(out.path(), "index.html");
    let (f, a, l) = (
        html.find("<h2>Findings</h2>").unwrap(),
        html.find("<h2>Audit</h2>").unwrap(),
        html.find("<h2>Ledger and coverage</h2>").unwrap(),
    );
    assert!(
        f < a && a < l,
        "the audit comes after the findings, before the ledger"
    );
    assert!(html.contains("<td>DenyHttpsFromScanners</td>"));
    assert!(read(out.path(), "report.md").contains("\n## Audit\n"));
    let csv = read(out.path(), "audit.csv");
    let n = alone["findings"].as_array().unwrap().len() + alone["rules"].as_array().unwrap().len();
    assert_eq!(csv.lines().count(), 1 + n);
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("high,overly_permissive,RG-PROD-APP,APP-NSG,AllowRdpLegacy,"));
    // A partial saved with --rules merges, and merge says it does not rerun the audit.
    let part = out.path().join("p.part");
    let (code, _, err) = run_in_root(&[
        "report",
        "fixtures/container",
        "-o",
        out.path().join("again").to_str().unwrap(),
        "--quiet",
        "--rules",
        "fixtures/definitions/az-nsg-list.json",
        "--save-partial",
        part.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_in_root(&[
        "merge",
        part.to_str().unwrap(),
        "-o",
        out.path().join("merged").to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("merge does not rerun the rule audit"), "{err}");
    // Without --rules: no section, no file, no key.
    let plain = report_into(&["fixtures/container"]);
    assert!(!plain.path().join("audit.csv").exists());
    assert!(!read(plain.path(), "index.html").contains("<h2>Audit</h2>"));
    let r: Value = serde_json::from_str(&read(plain.path(), "report.json")).unwrap();
    assert!(r.get("audit").is_none());
}

#[test]
fn gen_logs_every_flow_under_the_rule_its_definitions_apply() {
    use nsgflow::audit::{defs, eval, space};
    let work = tempfile::tempdir().unwrap();
    let c = work.path().join("c");
    nsgflow()
        .args([
            "gen",
            "--out",
            c.to_str().unwrap(),
            "--family",
            "mixed",
            "--nsg-version",
            "mixed",
        ])
        .args([
            "--nsgs",
            "3",
            "--nics-per-nsg",
            "2",
            "--hours",
            "3",
            "--seed",
            "11",
        ])
        .assert()
        .success();
    let defs_path = work.path().join("c.nsgs.json");
    let nsgs = defs::load(&defs_path).unwrap();
    assert_eq!(nsgs.len(), 3);
    let tags = eval::Tags::new(vec![], Default::default());
    let out = nsgflow()
        .args(["flows", c.to_str().unwrap(), "--format", "csv"])
        .output()
        .unwrap();
    let mut rdr = csv::Reader::from_reader(&out.stdout[..]);
    let h = rdr.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (nsg_c, rule_c, src_c, dst_c, dport_c, proto_c, dir_c) = (
        col("nsg"),
        col("rule"),
        col("src"),
        col("dst"),
        col("dport"),
        col("protocol"),
        col("direction"),
    );
    let (mut checked, mut platform) = (0, 0);
    for row in rdr.records() {
        let row = row.unwrap();
        if &row[rule_c] == "PlatformRule" {
            platform += 1;
            continue;
        }
        let def = nsgs
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(&row[nsg_c]))
            .unwrap_or_else(|| panic!("no definitions for {}", &row[nsg_c]));
        let dir = if &row[dir_c] == "in" {
            defs::Dir::Inbound
        } else {
            defs::Dir::Outbound
        };
        let p = |s: &str| space::addr_point(s.parse().unwrap());
        let proto = match &row[proto_c] {
            "tcp" => space::TCP,
            "udp" => space::UDP,
            _ => space::OTHER,
        };
        let mut rules: Vec<&defs::RuleDef> =
            def.rules.iter().filter(|r| r.direction == dir).collect();
        rules.sort_by_key(|r| r.priority);
        let first = rules
            .iter()
            .find(|r| {
                eval::rule_space(r, &tags).unwrap().contains(
                    p(&row[src_c]),
                    p(&row[dst_c]),
                    row[dport_c].parse().unwrap(),
                    proto,
                )
            })
            .unwrap();
        assert_eq!(first.log_name(), &row[rule_c], "{row:?}");
        checked += 1;
    }
    assert!(checked > 1000 && platform > 0, "{checked} {platform}");
    // The audit of it: no rule the definitions lack, and the four planted problems per NSG.
    let v = run_json(&[
        "audit",
        c.to_str().unwrap(),
        "--rules",
        defs_path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let kinds = |k: &str| -> Vec<String> {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == k)
            .map(|f| {
                format!(
                    "{}/{}",
                    f["nsg"].as_str().unwrap(),
                    f["rule"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert!(
        kinds("undefined_rule").is_empty(),
        "{:?}",
        kinds("undefined_rule")
    );
    for (kind, rule) in [
        ("redundant", "AllowHttpsFromClients"),
        ("shadowed", "DenySshFromInternet"),
        ("overly_permissive", "AllowSshAnyLegacy"),
        ("unused", "AllowRdpLegacy"),
    ] {
        let want: Vec<String> = ["WEB-NSG", "APP-NSG", "DB-NSG"]
            .iter()
            .map(|n| format!("{n}/{rule}"))
            .collect();
        let mut got: Vec<String> = kinds(kind)
            .into_iter()
            .filter(|x| x.ends_with(rule))
            .collect();
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "{kind}");
    }
}

/// `--rejects FILE`: every rejected tuple (with a byte offset that opens its text), every
/// failed or partial blob and skipped path, one JSON object per line; the report's
/// `rejects.csv` lists the blob problems too; a user's file is never replaced.
#[test]
fn rejects_file_lists_every_rejected_tuple_failed_blob_and_skipped_path() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_tree(&root().join("fixtures/malformed"), &input);
    // A dangling link is a skipped path.
    std::os::unix::fs::symlink(dir.path().join("gone.json"), input.join("dangling.json")).unwrap();
    let file = dir.path().join("rejects.ndjson");
    let run = |extra: &[&str]| {
        nsgflow()
            .args(["summary", "--format", "json", "--rejects"])
            .arg(&file)
            .arg(&input)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrote "), "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(text.starts_with("{\"kind\":\"run\",\"nsgflow\":"));
    let head = &lines[0];
    let rejected = v["ledger"]["tuples_rejected"].as_u64().unwrap();
    assert_eq!(rejected, 22);
    assert_eq!(head["tuples_rejected"], rejected);
    assert_eq!(head["tuples_listed"], rejected);
    let kind = |k: &str| lines.iter().filter(|l| l["kind"] == k).collect::<Vec<_>>();
    // One line per rejected tuple, by reason as the ledger counts them.
    let tuples = kind("tuple");
    assert_eq!(tuples.len() as u64, rejected);
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for t in &tuples {
        *by_reason
            .entry(t["reason"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(by_reason, nonzero_reasons(&v));
    // Byte offsets open the raw text in the file.
    let mut with_offset = 0;
    for t in &tuples {
        if let Some(off) = t["byte_offset"].as_u64() {
            let raw = t["raw"].as_str().unwrap();
            let bytes = std::fs::read(t["path"].as_str().unwrap()).unwrap();
            assert_eq!(
                &bytes[off as usize..off as usize + raw.len()],
                raw.as_bytes(),
                "{t}"
            );
            with_offset += 1;
        }
    }
    assert_eq!(
        with_offset, 18,
        "every string tuple has an offset (4 are not strings)"
    );
    let first = tuples
        .iter()
        .find(|t| t["path"].as_str().unwrap().ends_with("bad-tuples.json"))
        .unwrap();
    assert_eq!(first["record"], 0);
    assert_eq!(first["tuple"], 0);
    assert_eq!(first["rule"], "UserRule_AllowWeb");
    assert_eq!(first["reason"], "field_count");
    assert_eq!(first["message"], "12 fields, 13 expected for nsg_v2");
    // Blob problems: 2 failed, 3 partial, as in the ledger, with their byte offsets.
    let blobs = kind("blob");
    let count = |r: &str| blobs.iter().filter(|b| b["reason"] == r).count();
    assert_eq!((count("failed_blob"), count("partial_blob")), (2, 3));
    let trunc = blobs
        .iter()
        .find(|b| b["path"].as_str().unwrap().ends_with("truncated.json"))
        .unwrap();
    assert_eq!(trunc["byte_offset"], 1331);
    let paths = kind("path");
    assert_eq!(paths.len(), 1);
    assert!(paths[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("dangling.json"));
    assert_eq!(paths[0]["reason"], "skipped_path");

    // The same bytes with one thread (blobs in path order whatever finished first).
    assert_eq!(run(&["-j", "1"]).status.code(), Some(3));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // A file of the user's is refused before any input is read; a symlink too.
    let mine = dir.path().join("notes.txt");
    std::fs::write(&mine, "my notes\n").unwrap();
    let out = nsgflow()
        .args(["summary", "--rejects"])
        .arg(&mine)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an nsgflow rejects file"));
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my notes\n");
    let link = dir.path().join("link.ndjson");
    std::os::unix::fs::symlink(&mine, &link).unwrap();
    let out = nsgflow()
        .args(["summary", "--rejects"])
        .arg(&link)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));

    // The report's rejects.csv lists the failed blobs and the skipped path beside the reasons.
    let report = dir.path().join("report");
    nsgflow()
        .args(["report", "--quiet", "-o"])
        .arg(&report)
        .arg(&input)
        .assert()
        .code(3);
    let csv = std::fs::read_to_string(report.join("rejects.csv")).unwrap();
    assert!(csv.contains("failed_blob,,"), "{csv}");
    assert!(csv.contains("truncated.json (byte 1331)"), "{csv}");
    assert!(csv.contains("skipped_path,,"), "{csv}");
    assert_eq!(
        csv.lines()
            .filter(|l| l.starts_with("partial_blob,"))
            .count(),
        3
    );
}

/// The committed fuzzing corpus (`fuzz/corpus`, see `fuzz/README.md`) replayed on stable:
/// every input of the `tuple` and `blob` targets keeps its property (the fast tuple pass
/// agrees with the reference grammar; a blob parses without a panic and its ledger
/// balances).
#[test]
fn fuzz_corpus_replays_without_a_finding() {
    let mut n = [0usize; 2];
    for (i, target) in ["tuple", "blob"].into_iter().enumerate() {
        let dir = root().join("fuzz/corpus").join(target);
        for e in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            match target {
                "tuple" => nsgflow::parse::tuple::check_agreement(&data),
                _ => nsgflow::parse::check_blob(&data),
            }
            n[i] += 1;
        }
    }
    assert!(n[0] >= 100 && n[1] >= 40, "corpus sizes {n:?}");
}

/// NSG v1 logs no packet or byte counts: its rules, family and connections read "not
/// logged" (JSON null) in every output, never 0 bytes.
#[test]
fn v1_counters_read_not_logged_in_every_output() {
    let c = root().join("fixtures/container");
    let (_, v) = summary_json(&[c.to_str().unwrap()]);
    let v1 = &v["families"]["nsg_v1"];
    assert_eq!(v1["tuples"], 90);
    assert_eq!(v1["counters_logged"], 0);
    assert!(v1["bytes_src_to_dst"].is_null() && v1["packets_dst_to_src"].is_null());
    assert!(
        v["totals"]["bytes_src_to_dst"].as_u64().unwrap() > 0,
        "v2 and VNet bytes are summed"
    );
    // WEB-NSG logs NSG v1 and VNet tuples (one NSG, spelled two ways): its v1 part alone.
    let (_, v) = summary_json(&[c.to_str().unwrap(), "--family", "nsg"]);
    let web: Vec<&Value> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["nsg"] == "WEB-NSG" && r["tuples"].as_u64().unwrap() > 0)
        .collect();
    assert_eq!(web.len(), 7);
    assert!(web.iter().all(|r| r["bytes_src_to_dst"].is_null()));
    let out = nsgflow()
        .args(["summary", "--family", "nsg"])
        .arg(&c)
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("WEB-NSG")).collect();
    assert!(
        rows.iter()
            .filter(|l| l.contains("not logged  not logged"))
            .count()
            == 7,
        "{table}"
    );
    // Connections of v1 tuples: counts null in JSON Lines, empty in CSV.
    let out = nsgflow()
        .args([
            "connections",
            "--nsg",
            "WEB-NSG",
            "--family",
            "nsg",
            "--format",
            "jsonl",
        ])
        .arg(&c)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout).unwrap();
    assert!(!lines.is_empty());
    for l in lines.lines() {
        let j: Value = serde_json::from_str(l).unwrap();
        assert_eq!(j["counters_logged"], false);
        assert!(j["bytes_src_to_dst"].is_null());
    }
    // The report's rules tables.
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    nsgflow()
        .args(["report", "--quiet", "--family", "nsg", "-o"])
        .arg(&r)
        .arg(&c)
        .assert()
        .success();
    let md = std::fs::read_to_string(r.join("report.md")).unwrap();
    assert!(
        md.lines().any(
            |l| l.starts_with("| WEB-NSG | UserRule\\_AllowHttps | 18 |")
                && l.contains("| not logged |")
        ),
        "{md}"
    );
    let csv = std::fs::read_to_string(r.join("rules.csv")).unwrap();
    assert!(csv.lines().any(|l| l.starts_with(
        "WEB-NSG,6F3C1E2A-8B4D-4F6A-9C2E-1A2B3C4D5E6F,RG-PROD-WEB,UserRule_AllowHttps,18,"
    ) && l.contains("not logged,not logged")));
    let html = std::fs::read_to_string(r.join("index.html")).unwrap();
    assert!(html.contains("<td>WEB-NSG</td><td>UserRule_AllowHttps</td><td class=\"n\">18</td>"));
    assert!(html.contains("<td class=\"n\">not logged</td>"));
}

/// A filter that matches nothing says so and exits 1, so a scheduled job with a typo or a
/// renamed NSG does not look like a quiet week.
#[test]
fn a_filter_that_matches_nothing_says_so_and_exits_1() {
    let c = root().join("fixtures/container");
    for args in [&["--nsg", "NOPE-NSG"][..], &["--port", "9"][..]] {
        let out = nsgflow()
            .arg("summary")
            .arg(&c)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("nsgflow: no tuples matched the filters; "),
            "{err}"
        );
    }
    let out = nsgflow()
        .arg("summary")
        .arg(&c)
        .args(["--port", "9"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no tuples matched the filters; 849 tuples were read (849 outside the filters)"));
    // A filter that matches something keeps exit 0.
    nsgflow()
        .arg("summary")
        .arg(&c)
        .args(["--port", "443"])
        .assert()
        .code(0);
}

/// Hours a NIC has no blob for, inside the window, are a warning on stderr and in the
/// report (not only a coverage row), so they do not read as a drop in traffic.
#[test]
fn missing_hours_are_a_warning_on_stderr_and_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    copy_tree(&root().join("fixtures/container"), &c);
    let mut removed = 0;
    for e in walkdir::WalkDir::new(&c) {
        let p = e.unwrap().into_path();
        if p.to_string_lossy()
            .contains("/h=01/m=00/macAddress=000D3A000001/")
            && p.is_file()
        {
            std::fs::remove_file(&p).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 2, "the NIC's NSG and VNet blobs of 01:00");
    let want = "missing hours: 1 NICs have no blob for 1 NIC-hours of the window (e.g. 000D3A000001 from 2026-01-05T01:00:00.000Z, 1 hours)";
    let out = nsgflow()
        .args(["summary", "--format", "json"])
        .arg(&c)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(want));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().starts_with(want)));
    let r = tmp.path().join("r");
    let out = nsgflow()
        .args(["report", "--quiet", "-o"])
        .arg(&r)
        .arg(&c)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(want));
    for f in ["report.md", "index.html"] {
        let text = std::fs::read_to_string(r.join(f)).unwrap();
        assert!(text.contains("missing hours: 1 NICs"), "{f}");
        // The coverage table lists only the NIC with a gap; the others are one line.
        assert!(
            text.contains("5 NICs complete for all 3 hours; the 1 below has gaps."),
            "{f}"
        );
        assert!(text.contains("000D3A000001"), "{f}");
        assert!(
            !text.contains("000D3A010001"),
            "{f}: a complete NIC is not listed"
        );
    }
    // The complete fixture has none.
    let out = nsgflow()
        .args(["summary", "--format", "json"])
        .arg(root().join("fixtures/container"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("missing hours"));
}

/// `top` names each column once: a count metric is ranked by its own column, a distinct
/// count gets a column of its own; CSV headers are the JSON names.
#[test]
fn top_csv_names_each_column_once() {
    let c = root().join("fixtures/container");
    let run = |args: &[&str]| {
        let out = nsgflow().arg("top").arg(&c).args(args).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let csv = run(&["--by", "rule", "--format", "csv"]);
    assert_eq!(
        csv.lines().next().unwrap(),
        "rank,key,scope,label,tuples,allowed,denied,packets,bytes"
    );
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("1,db-nsg/UserRule_AllowHttps,,,112,112,0,"));
    let csv = run(&[
        "--by",
        "src",
        "--metric",
        "distinct-dport",
        "--format",
        "csv",
    ]);
    assert_eq!(
        csv.lines().next().unwrap(),
        "rank,key,scope,label,distinct_dport,tuples,allowed,denied,packets,bytes"
    );
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("1,10.0.0.4,internal,,7,48,"));
}

/// A generated container of 40 NSGs with one NIC each, for one hour (seed 1).
fn gen_40_nsgs(out: &std::path::Path) {
    nsgflow()
        .args(["gen", "--nsgs", "40", "--nics-per-nsg", "1", "--hours", "1"])
        .args(["--seed", "1", "--out"])
        .arg(out)
        .assert()
        .success();
}

/// `gen --nsgs 40` writes 40 NSGs of 40 names (the 8 base names, then `WEB-2-NSG`, …).
#[test]
fn gen_gives_every_nsg_a_name_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    gen_40_nsgs(&out);
    let (_, v) = summary_json(&[out.to_str().unwrap()]);
    let names: std::collections::BTreeSet<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["nsg"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 40);
    assert!(
        names.contains("WEB-NSG") && names.contains("WEB-2-NSG") && names.contains("BATCH-5-NSG")
    );
}

/// Azure's DNS and metadata addresses are `azure-platform` in the report's talkers, as
/// `top --by class` calls them, never `external`.
#[test]
fn azure_platform_addresses_have_one_classification_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r");
    nsgflow()
        .args(["report", "--quiet", "-o"])
        .arg(&r)
        .arg(root().join("fixtures/container"))
        .assert()
        .success();
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("report.json")).unwrap()).unwrap();
    let scopes: Vec<(&str, &str)> = v["egress"]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["key"].as_str().unwrap(), x["scope"].as_str().unwrap()))
        .filter(|(k, _)| *k == "169.254.169.254" || *k == "168.63.129.16")
        .collect();
    assert!(!scopes.is_empty());
    assert!(
        scopes.iter().all(|(_, s)| *s == "azure-platform"),
        "{scopes:?}"
    );
    let out = nsgflow()
        .args([
            "top",
            "--by",
            "dst",
            "--dst",
            "169.254.169.254",
            "--format",
            "csv",
        ])
        .arg(root().join("fixtures/container"))
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("1,169.254.169.254,azure-platform,"),
        "{csv}"
    );
}

/// The report has a title: `--title`, escaped, or by default the inputs and the window.
#[test]
fn report_title_names_the_inputs_and_window_or_says_what_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let c = root().join("fixtures/container");
    let r = tmp.path().join("r");
    nsgflow()
        .args(["report", "--quiet", "-o"])
        .arg(&r)
        .arg(&c)
        .assert()
        .success();
    let want = "Flow logs of container, 2026-01-05 00:00 to 2026-01-05 02:59 UTC";
    let html = std::fs::read_to_string(r.join("index.html")).unwrap();
    assert!(html.contains(&format!("<h1>{want}</h1>")));
    assert!(std::fs::read_to_string(r.join("report.md"))
        .unwrap()
        .starts_with(&format!("# {want}\n")));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["title"], want);
    nsgflow()
        .args(["report", "--quiet", "--title", "Weekly <b>[x](y)", "-o"])
        .arg(&r)
        .arg(&c)
        .assert()
        .success();
    let html = std::fs::read_to_string(r.join("index.html")).unwrap();
    assert!(
        html.contains("<h1>Weekly &#60;b&#62;[x](y)</h1>"),
        "escaped in HTML"
    );
    let md = std::fs::read_to_string(r.join("report.md")).unwrap();
    assert!(
        md.starts_with("# Weekly &lt;b&gt;\\[x\\]\\(y\\)\n"),
        "no link in Markdown"
    );
}

/// `--last hour|day|week` and relative `--since`/`--until` pick the same tuples as the
/// absolute window they stand for, counted from NSGFLOW_NOW when it is set; the report
/// names the window it used.
#[test]
fn relative_windows_and_last_period_match_the_absolute_window() {
    let run = |args: &[&str]| {
        let out = nsgflow()
            .env("NSGFLOW_NOW", "2026-01-05T02:30:00Z")
            .args(["summary", "--format", "json"])
            .arg(root().join("fixtures/container"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["totals"].clone(), v["rules"].clone())
    };
    let absolute = run(&[
        "--since",
        "2026-01-05T01:00:00Z",
        "--until",
        "2026-01-05T02:00:00Z",
    ]);
    assert_eq!(absolute.0["tuples"], 515);
    assert_eq!(run(&["--last", "hour"]), absolute);
    assert_eq!(run(&["--since", "now-90m", "--until", "-30m"]), absolute);
    assert_eq!(run(&["--since", "90m", "--until", "now-30m"]), absolute);
    // The whole day so far, and the day before it (nothing).
    assert_eq!(run(&["--since", "today"]).0["tuples"], 849);
    let out = nsgflow()
        .env("NSGFLOW_NOW", "2026-01-05T02:30:00Z")
        .args(["summary", "--last", "day"])
        .arg(root().join("fixtures/container"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tuples matched the filters"));
    // The report says which window a relative bound meant.
    let dir = tempfile::tempdir().unwrap();
    let out = nsgflow()
        .env("NSGFLOW_NOW", "2026-01-05T02:30:00Z")
        .args(["report", "--last", "hour", "-o"])
        .arg(dir.path().join("r"))
        .arg(root().join("fixtures/container"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r/report.json")).unwrap()).unwrap();
    assert_eq!(
        v["filters"],
        serde_json::json!(["--last hour (= 2026-01-05T01:00:00.000Z to 2026-01-05T02:00:00.000Z)"])
    );
    assert_eq!(v["totals"]["tuples"], 515);
    // --last excludes --since/--until; a bad NSGFLOW_NOW or bound is a usage error.
    for (env, args) in [
        (
            "2026-01-05T02:30:00Z",
            vec!["--last", "week", "--since", "7d"],
        ),
        ("2026-01-05T02:30:00Z", vec!["--last", "month"]),
        ("2026-01-05T02:30:00Z", vec!["--since", "7x"]),
        ("yesterday", vec!["--since", "7d"]),
    ] {
        let out = nsgflow()
            .env("NSGFLOW_NOW", env)
            .arg("summary")
            .arg(root().join("fixtures/container"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// `completions SHELL` prints a script for each shell; `man` prints nsgflow(1) and
/// `man --out DIR` writes one page per subcommand, replacing them only with --force.
#[test]
fn completions_and_man_pages_from_the_cli() {
    for (shell, mark) in [
        ("bash", "complete -F _nsgflow"),
        ("zsh", "#compdef nsgflow"),
        ("fish", "complete -c nsgflow"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = nsgflow().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let s = String::from_utf8(out.stdout).unwrap();
        assert!(s.contains(mark), "{shell}");
        assert!(
            s.contains("anomalies") && s.contains("max-blob-bytes"),
            "{shell}"
        );
    }
    let out = nsgflow().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH nsgflow 1"));
    assert!(
        page.contains("nsgflow\\-report(1)"),
        "the page lists the subcommands"
    );
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let out = nsgflow().args(["man", "--out"]).arg(&man).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut names: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 14, "{names:?}");
    assert!(names.contains(&"nsgflow-report.1".to_string()));
    assert!(names.contains(&"nsgflow-completions.1".to_string()));
    let out = nsgflow().args(["man", "--out"]).arg(&man).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already there; --force"));
    let out = nsgflow()
        .args(["man", "--force", "--out"])
        .arg(&man)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// VNet logs put Azure's own rules under the all-zero ACL id: every output calls it
/// "Azure platform", never an NSG named 00000000-..., and the audit leaves it out.
#[test]
fn the_all_zero_acl_is_called_azure_platform() {
    let (_, v) = summary_json(&[root().join("fixtures/container").to_str().unwrap()]);
    let rows: Vec<(String, String, u64)> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rule"] == "PlatformRule")
        .map(|r| {
            (
                r["nsg"].as_str().unwrap().to_string(),
                r["resource_id"].as_str().unwrap_or("").to_string(),
                r["tuples"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "Azure platform");
    assert_eq!(rows[0].2, 29);
    assert!(!v.to_string().contains("\"nsg\":\"00000000-"));
    let out = nsgflow()
        .args(["top", "--by", "nsg", "--format", "csv"])
        .arg(root().join("fixtures/container"))
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.contains("Azure platform"), "{csv}");
    assert!(!csv.contains("00000000-0000"), "{csv}");
}

/// At scale the page stays short: the HTML and Markdown rules tables list the 100 rules
/// with the most hits and say how many there are; rules.csv keeps every rule.
#[test]
fn long_rules_tables_show_the_top_rules_and_count_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    gen_40_nsgs(&c);
    let r = tmp.path().join("r");
    nsgflow()
        .args(["report", "--quiet", "--no-findings", "-o"])
        .arg(&r)
        .arg(&c)
        .assert()
        .success();
    let note = "Showing the 100 rules with the most hits of 320; rules.csv and report.json have every rule.";
    let md = std::fs::read_to_string(r.join("report.md")).unwrap();
    let html = std::fs::read_to_string(r.join("index.html")).unwrap();
    assert!(md.contains(note) && html.contains(note));
    let rules_md = md
        .split("## Rules\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let rows: Vec<&str> = rules_md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| NSG"))
        .collect();
    assert_eq!(rows.len(), 100);
    let csv = std::fs::read_to_string(r.join("rules.csv")).unwrap();
    assert_eq!(csv.lines().count(), 321, "a header and every rule");
    let v: Value = serde_json::from_slice(&std::fs::read(r.join("report.json")).unwrap()).unwrap();
    let rules = v["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 320);
    // The rows shown are the ones with most hits: the least shown has at least the most
    // left out.
    let mut hits: Vec<u64> = rules
        .iter()
        .map(|x| x["tuples"].as_u64().unwrap())
        .collect();
    hits.sort_unstable_by(|a, b| b.cmp(a));
    let hits_of = |row: &str| -> u64 {
        let cell = row.split(" | ").nth(2).unwrap();
        if cell.ends_with(" k") || cell.ends_with(" M") {
            u64::MAX
        } else {
            cell.parse().unwrap()
        }
    };
    let least_shown = rows.iter().map(|r| hits_of(r)).min().unwrap();
    assert!(least_shown >= hits[100], "{least_shown} vs {}", hits[100]);
}

/// An NSG is its subscription, resource group and name, compared case-insensitively: NSG
/// logs' `APP-NSG` and VNet logs' `app-nsg` of one resource group are one row, spelled as
/// ARM spells it; the `APP-NSG` of another resource group stays apart, and where names
/// collide the tables add the resource group (fixtures/identity).
#[test]
fn an_nsg_is_keyed_by_subscription_resource_group_and_name() {
    let c = root().join("fixtures/identity");
    let (code, v) = summary_json(&[c.to_str().unwrap()]);
    assert_eq!(code, 0);
    let rows: Vec<(String, String, String, u64, u64)> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["nsg"].as_str().unwrap().to_string(),
                r["subscription"].as_str().unwrap().to_string(),
                r["resource_group"].as_str().unwrap().to_string(),
                r["tuples"].as_u64().unwrap(),
                r["counters_logged"].as_u64().unwrap(),
            )
        })
        .collect();
    let sub = "11111111-2222-3333-4444-555555555555";
    assert_eq!(
        rows,
        vec![
            ("APP-NSG".into(), sub.into(), "RG-B".into(), 1, 0),
            ("app-nsg".into(), sub.into(), "rg-a".into(), 5, 3),
        ]
    );
    let run = |args: &[&str]| {
        let out = nsgflow().args(args).arg(&c).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run(&["summary"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("app-nsg (rg-a)  UserRule_AllowHttps       5 ")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("APP-NSG (RG-B)  UserRule_AllowHttps       1 ")),
        "{table}"
    );
    let top = run(&["top", "--by", "nsg", "--format", "csv"]);
    let keys: Vec<&str> = top
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(keys, ["app-nsg (rg-a)", "APP-NSG (RG-B)"], "{top}");
    let top = run(&["top", "--by", "rule", "--format", "csv"]);
    assert!(
        top.lines()
            .nth(1)
            .unwrap()
            .starts_with("1,app-nsg (rg-a)/UserRule_AllowHttps,,,5,"),
        "{top}"
    );
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    nsgflow()
        .args(["report", "--quiet", "-o"])
        .arg(&r)
        .arg(&c)
        .assert()
        .success();
    let md = std::fs::read_to_string(r.join("report.md")).unwrap();
    assert!(
        md.contains("| app-nsg \\(rg-a\\) | UserRule\\_AllowHttps | 5 |"),
        "{md}"
    );
    let csv = std::fs::read_to_string(r.join("rules.csv")).unwrap();
    assert!(
        csv.contains(&format!("\napp-nsg,{sub},rg-a,UserRule_AllowHttps,5,")),
        "{csv}"
    );
}

/// Bins where a NIC's logs are missing, or logged by both NSG and VNet flow logs, are counted
/// in report.json's series and shaded with a legend in both time charts, so that a drop or a
/// spike there does not read as a change of traffic (#14 item 7).
#[test]
fn time_charts_shade_missing_and_double_logged_hours() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c");
    copy_tree(&root().join("fixtures/container"), &c);
    // NIC 000D3A010000 (APP-NSG) loses its one blob of hour 02:00.
    let mut gone = 0;
    for e in walkdir::WalkDir::new(&c) {
        let p = e.unwrap().path().to_path_buf();
        let s = p.to_string_lossy().to_string();
        if p.is_file() && s.contains("h=02") && s.contains("000D3A010000") {
            std::fs::remove_file(&p).unwrap();
            gone += 1;
        }
    }
    assert_eq!(gone, 1, "one blob of that NIC-hour");
    let r = report_into(&[c.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&read(r.path(), "report.json")).unwrap();
    let marks: Vec<(String, u64, u64)> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["start"].as_str().unwrap()[11..16].to_string(),
                h["nics_missing"].as_u64().unwrap(),
                h["nics_double_logged"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        marks,
        [
            ("00:00".to_string(), 0, 0),
            ("01:00".to_string(), 0, 6),
            ("02:00".to_string(), 1, 0)
        ]
    );
    for chart in ["charts/decisions_per_hour.svg", "charts/bytes_per_hour.svg"] {
        let svg = read(r.path(), chart);
        assert!(
            svg.contains("NIC logs missing") && svg.contains("logged twice (NSG + VNet)"),
            "{chart}"
        );
    }
    // The fixture as bundled: no gap, so no grey legend.
    let r = report_into(&["fixtures/container"]);
    let svg = read(r.path(), "charts/decisions_per_hour.svg");
    assert!(!svg.contains("NIC logs missing") && svg.contains("logged twice (NSG + VNet)"));
}

/// `report --compare PREVIOUS`: week 2 (with planted attacks) against week 1's report.json.
/// New and vanished external sources and destinations equal an independent set difference
/// over the raw tuples of both weeks; the planted attacks are new findings and the
/// background-scanning summary stays open; totals carry their deltas; the HTML and Markdown
/// open with the section after the findings; a file that is no report is refused (exit 2).
#[test]
fn compare_reports_what_changed_since_the_previous_week() {
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    let gen = |dir: &Path, seed: &str, start: &str, attacks: bool| {
        let mut c = nsgflow();
        c.args(["gen", "--hours", "4", "--nsgs", "2", "--nics-per-nsg", "3"])
            .args(["--seed", seed, "--start", start, "--out"])
            .arg(dir);
        if attacks {
            c.arg("--attacks");
        }
        c.assert().success();
    };
    let (w1, w2) = (w("week1"), w("week2"));
    gen(&w1, "1", "2026-01-05", false);
    gen(&w2, "2", "2026-01-12", true);
    let r1 = report_into(&[w1.to_str().unwrap()]);
    let prev = r1.path().join("report.json");
    let r2 = report_into(&[w2.to_str().unwrap(), "--compare", prev.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&read(r2.path(), "report.json")).unwrap();
    let c = &v["comparison"];
    let v1: Value = serde_json::from_str(&read(r1.path(), "report.json")).unwrap();
    assert_eq!(c["previous_first"], v1["coverage"]["first"]);
    let tuples = |v: &Value| v["totals"]["tuples"].as_i64().unwrap();
    assert_eq!(c["totals"][0]["name"], "tuples");
    assert_eq!(
        c["totals"][0]["change"].as_i64().unwrap(),
        tuples(&v) - tuples(&v1)
    );
    let external =
        |ip: &str| !ip.starts_with("10.") && ip != "168.63.129.16" && ip != "169.254.169.254";
    let ends = |dir: &Path, inbound: bool| -> std::collections::BTreeSet<String> {
        raw_tuples(dir)
            .iter()
            .filter(|t| (t.f[6] == "I") == inbound)
            .map(|t| t.f[if inbound { 1 } else { 2 }].clone())
            .filter(|ip| external(ip))
            .collect()
    };
    for (key, inbound) in [("external_sources", true), ("external_destinations", false)] {
        let (a, b) = (ends(&w1, inbound), ends(&w2, inbound));
        let new: Vec<&String> = b.difference(&a).collect();
        let gone: Vec<&String> = a.difference(&b).collect();
        let got = &c[key];
        assert_eq!(
            got["new_count"].as_u64().unwrap() as usize,
            new.len(),
            "{key}"
        );
        assert_eq!(
            got["gone_count"].as_u64().unwrap() as usize,
            gone.len(),
            "{key}"
        );
        let listed: Vec<&str> = got["new"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(
            listed,
            new.iter().take(50).map(|s| s.as_str()).collect::<Vec<_>>(),
            "{key}"
        );
        assert!(new.len() > 50, "{key}: a real difference");
    }
    let kinds: std::collections::BTreeSet<&str> = c["findings_new"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    for k in nsgflow::report::DETECTORS {
        assert!(kinds.contains(k), "{k} is new: {kinds:?}");
    }
    assert!(c["findings_open"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["severity"] == "info"));
    assert_eq!(
        c["findings_gone"].as_array().unwrap().len() + c["findings_open"].as_array().unwrap().len(),
        v1["findings"]["items"].as_array().unwrap().len()
    );
    assert_eq!(
        c["rules_with_traffic"]["new"][0],
        "APP-NSG/UserRule_AllowRdpFromAnywhere"
    );
    let md = read(r2.path(), "report.md");
    let (f, ch, l) = (
        md.find("## Findings").unwrap(),
        md.find("## Changes since 2026-01-05T00:00:00.000Z")
            .unwrap(),
        md.find("## Ledger").unwrap(),
    );
    assert!(f < ch && ch < l);
    // The section as a reader sees it (the previous file's temp path aside).
    let section: String = md[ch..l]
        .lines()
        .filter(|x| !x.starts_with("Compared with "))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("compare_md", section);
    let html = read(r2.path(), "index.html");
    assert!(html.contains("<h2>Changes since 2026-01-05T00:00:00.000Z"));
    // week 1's own report.json has the complete lists a later comparison reads.
    assert_eq!(
        v1["endpoints"]["external_sources"]
            .as_array()
            .unwrap()
            .len(),
        ends(&w1, true).len()
    );
    // Not a report: exit 2 before any work, naming the file.
    let bad = w("bad.json");
    std::fs::write(&bad, "{\"records\": []}").unwrap();
    let o = nsgflow()
        .args(["report", w2.to_str().unwrap(), "--quiet", "-o"])
        .arg(w("r3"))
        .arg("--compare")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.json: not an nsgflow report.json"),
        "{err}"
    );
    assert!(!w("r3").exists(), "nothing written");
}

/// Azurite (the Azure Storage emulator) that `.ci/run` starts on 127.0.0.1:10000, and the
/// upload helper `scripts/azurite.cjs` (its SDK found through NODE_PATH). `None`, with a
/// visible skip, on a machine without them; under `CI=true` they must be there.
fn azurite() -> Option<String> {
    let url = std::env::var("AZURITE_BLOB_STORAGE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:10000".to_string());
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let up = addr.parse::<std::net::SocketAddr>().ok().is_some_and(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
    });
    let helper = up
        && std::process::Command::new("node")
            .args(["-e", "require('@azure/storage-blob')"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !helper {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install and start Azurite and @azure/storage-blob (.ci/run)"
        );
        eprintln!(
            "skipping: no Azurite at {url} with @azure/storage-blob on NODE_PATH (see .ci/run)"
        );
        return None;
    }
    Some(url)
}

/// Run the Azurite helper (`upload CONTAINER DIR`, `put CONTAINER NAME FILE`, `delete CONTAINER NAME`).
fn azurite_helper(args: &[&str]) {
    let st = std::process::Command::new("node")
        .arg(root().join("scripts/azurite.cjs"))
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "azurite helper {args:?}");
}

/// A container of the emulator holding the bundled fixture tree: (emulator URL, `az://` name).
fn azurite_with_fixture(container: &str) -> Option<(String, String)> {
    let url = azurite()?;
    azurite_helper(&["upload", container, "fixtures/container"]);
    Some((url, format!("az://devstoreaccount1/{container}")))
}

/// `nsgflow` against the emulator with the environment a user sets.
fn nsgflow_az(url: &str) -> Command {
    let mut c = nsgflow();
    c.env("AZURE_STORAGE_USE_EMULATOR", "1")
        .env("AZURITE_BLOB_STORAGE_URL", url)
        .env_remove("AZURE_STORAGE_ACCOUNT_KEY")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN");
    c
}

#[test]
fn azure_blob_input_equals_the_same_tree_read_from_disk() {
    let Some((url, ref az)) = azurite_with_fixture("same-as-disk") else {
        return;
    };
    let remote = nsgflow_az(&url)
        .args(["summary", az, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        remote.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    let err = String::from_utf8_lossy(&remote.stderr);
    assert!(
        err.contains(&format!("{az}: listed 24 objects in ")) && err.contains("kept 24 blobs"),
        "{err}"
    );
    let local = nsgflow()
        .args(["summary", "fixtures/container", "--format", "json"])
        .output()
        .unwrap();
    // Identical but for where the blobs are, and the listing the ledger adds.
    let remote = String::from_utf8(remote.stdout)
        .unwrap()
        .replace(&format!("{az}/"), "fixtures/container/");
    let mut v: Value = serde_json::from_str(&remote).unwrap();
    let listing = v["ledger"]
        .as_object_mut()
        .unwrap()
        .remove("remote_listings")
        .unwrap();
    assert_eq!(listing[0]["input"], az.as_str());
    assert_eq!(listing[0]["listed"], 24);
    assert_eq!(listing[0]["kept"], 24);
    let l: Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&v).unwrap(),
        serde_json::to_string_pretty(&l).unwrap()
    );
    assert_eq!(v["ledger"]["blobs"], 24);
    assert_eq!(v["totals"]["tuples"], 849);

    // The report too: every output file equal once blob paths and the input name are mapped.
    let out = tempfile::tempdir().unwrap();
    let (ra, rl) = (out.path().join("az"), out.path().join("local"));
    let st = nsgflow_az(&url)
        .args(["report", az, "-o", ra.to_str().unwrap(), "--title", "t"])
        .output()
        .unwrap();
    assert_eq!(
        st.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    nsgflow()
        .args([
            "report",
            "fixtures/container",
            "-o",
            rl.to_str().unwrap(),
            "--title",
            "t",
        ])
        .assert()
        .code(0);
    for f in [
        "report.json",
        "report.md",
        "findings.csv",
        "rules.csv",
        "connections.csv",
    ] {
        let a = std::fs::read_to_string(ra.join(f))
            .unwrap()
            .replace(&format!("{az}/"), "fixtures/container/")
            .replace(az.as_str(), "fixtures/container");
        let b = std::fs::read_to_string(rl.join(f)).unwrap();
        let a = if f == "report.json" {
            // The ledger's listing of the az:// input is the one addition.
            let mut v: Value = serde_json::from_str(&a).unwrap();
            let l = v["ledger"]
                .as_object_mut()
                .unwrap()
                .remove("remote_listings");
            assert_eq!(l.unwrap()[0]["kept"], 24);
            let w: Value = serde_json::from_str(&b).unwrap();
            assert_eq!(
                v, w,
                "report.json differs between az:// and the same tree on disk"
            );
            continue;
        } else {
            a
        };
        assert!(
            a == b,
            "{f} differs between az:// and the same tree on disk"
        );
    }
}

#[test]
fn azure_listing_is_pruned_to_the_window_and_errors_are_one_actionable_line() {
    let Some((url, ref az)) = azurite_with_fixture("pruned") else {
        return;
    };
    // Hours 01 and 02 (a blob of 02 may hold 01:59's tuples) are listed; hour 00's blobs
    // never are.
    let o = nsgflow_az(&url)
        .args([
            "summary",
            az,
            "--since",
            "2026-01-05T01:00:00Z",
            "--until",
            "2026-01-05T01:30:00Z",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let local = nsgflow()
        .args([
            "summary",
            "fixtures/container",
            "--since",
            "2026-01-05T01:00:00Z",
            "--until",
            "2026-01-05T01:30:00Z",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let lv: Value = serde_json::from_slice(&local.stdout).unwrap();
    let kept = lv["ledger"]["blobs"].as_u64().unwrap();
    assert!(kept > 0 && kept < 24, "{kept}");
    assert!(
        err.contains(&format!("{az}: listed {kept} objects in ")),
        "only the window's hours are listed: {err}"
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["totals"], lv["totals"]);

    // A missing container, and a wrong key (which never shows in the message): exit 2.
    let o = nsgflow_az(&url)
        .args(["summary", "az://devstoreaccount1/no-such-container"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "nsgflow: container no-such-container not found in account devstoreaccount1: check the name (flow logs write insights-logs-networksecuritygroupflowevent and insights-logs-flowlogflowevent)"
    );
    let key = "d3JvbmcgYWNjb3VudCBrZXkgZm9yIHRoZSB0ZXN0";
    let o = nsgflow_az(&url)
        .env("AZURE_STORAGE_KEY", key)
        .args(["summary", az])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("nsgflow: authentication failed for account devstoreaccount1")
            && err.contains("AZURE_STORAGE_KEY")
            && !err.contains(key),
        "{err}"
    );
    // A SAS token on the command line is refused before any request, and not echoed.
    let o = nsgflow_az(&url)
        .args([
            "summary",
            "https://acct.blob.core.windows.net/c?sv=2024&sig=TOPSECRET",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("AZURE_STORAGE_SAS_TOKEN") && !err.contains("TOPSECRET"),
        "{err}"
    );
}

#[test]
fn an_azure_blob_deleted_after_listing_is_a_failed_blob_and_the_run_goes_on() {
    let Some((url, ref az)) = azurite_with_fixture("deleted") else {
        return;
    };
    let name = "insights-logs-networksecuritygroupflowevent/resourceId=/SUBSCRIPTIONS/6F3C1E2A-8B4D-4F6A-9C2E-1A2B3C4D5E6F/RESOURCEGROUPS/RG-PROD-DATA/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/DB-NSG/y=2026/m=01/d=05/h=00/m=00/macAddress=000D3A020000/PT1H.json";
    // The library's stages, so the blob can go between listing and reading (the CLI does
    // the same two steps, with no hook between them).
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "1");
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &url);
    let d = nsgflow::discover::discover(&[PathBuf::from(&az)], &Default::default());
    assert_eq!(d.blobs.len(), 24);
    azurite_helper(&["delete", "deleted", name]);
    let s = nsgflow::aggregate::summarize(&d.blobs, &Default::default());
    let (_, one) = summary_json(&[&format!("fixtures/container/{name}")]);
    let lost = one["ledger"]["tuples"].as_u64().unwrap();
    assert!(lost > 0);
    assert_eq!(s.ledger.blobs, 24);
    assert_eq!(s.ledger.blobs_failed, 1);
    assert_eq!(s.ledger.tuples, 849 - lost);
    let p = &s.ledger.problems[0];
    assert_eq!(p.path, format!("az://devstoreaccount1/deleted/{name}"));
    assert!(p.message.starts_with("cannot read: "), "{}", p.message);
    assert!(
        p.message.contains("not found") || p.message.contains("NotFound"),
        "{}",
        p.message
    );
}

// ---- --state-dir: incremental runs ----

/// Every file of a report folder, report.json without its `ledger.state` (the one part that
/// says what came from the state).
fn report_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        let mut bytes = std::fs::read(e.path()).unwrap();
        if rel == "report.json" {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            v["ledger"].as_object_mut().unwrap().remove("state");
            bytes = serde_json::to_vec_pretty(&v).unwrap();
        }
        out.insert(rel, bytes);
    }
    out
}

/// A command's JSON without what says where its numbers came from: `ledger.state` where the
/// output has a ledger, else the stderr line (top, timeline and graph print no ledger).
fn without_state(mut v: Value, err: &str) -> (Value, Value) {
    if let Some(l) = v.get_mut("ledger").and_then(|l| l.as_object_mut()) {
        let st = l.remove("state").unwrap_or(Value::Null);
        return (v, st);
    }
    let Some(line) = err.lines().find(|l| l.starts_with("--state-dir ")) else {
        return (v, Value::Null);
    };
    let read = line
        .split(", ")
        .nth(1)
        .and_then(|w| w.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{line}"));
    (v, serde_json::json!({ "blobs_read": read }))
}

/// `summary --format json` without `ledger.state`, and that state.
fn summary_split(out: &std::process::Output) -> (Value, Value) {
    let mut v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let st = v["ledger"]
        .as_object_mut()
        .unwrap()
        .remove("state")
        .unwrap_or(Value::Null);
    (v, st)
}

/// A report and a summary of `input` with the state folders, each checked against a fresh
/// full run (no state) of the same command and window: equal in every file and number.
/// Returns the report run's `ledger.state` and its files.
fn state_run_equals_fresh(
    input: &Path,
    states: &Path,
    extra: &[&str],
) -> (Value, BTreeMap<String, Vec<u8>>) {
    let input = input.to_str().unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let inc = tempfile::tempdir().unwrap();
    let run = |out: &Path, state: Option<&Path>| {
        let mut c = nsgflow();
        c.args(["report", input, "-o", out.to_str().unwrap(), "--quiet"])
            .args(extra);
        if let Some(s) = state {
            c.arg("--state-dir").arg(s);
        }
        let o = c.output().unwrap();
        assert!(
            matches!(o.status.code(), Some(0 | 3)),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    run(fresh.path(), None);
    let err = run(inc.path(), Some(&states.join("report")));
    assert!(err.contains("--state-dir "), "{err}");
    let files = report_files(inc.path());
    let want = report_files(fresh.path());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert!(files[k] == *v, "{k} differs from a fresh full run");
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(inc.path().join("report.json")).unwrap()).unwrap();
    let state = report["ledger"]["state"].clone();

    let summary = |state: Option<&Path>| {
        let mut c = nsgflow();
        c.args(["summary", input, "--format", "json"]).args(extra);
        if let Some(s) = state {
            c.arg("--state-dir").arg(s);
        }
        summary_split(&c.output().unwrap())
    };
    let (want, _) = summary(None);
    let (got, sst) = summary(Some(&states.join("summary")));
    assert_eq!(
        got, want,
        "summary with --state-dir differs from a fresh full run"
    );
    assert_eq!(sst["blobs_read"], state["blobs_read"], "{sst} vs {state}");
    (state, files)
}

fn pt1h(dir: &Path, day: &str, hour: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| {
            let s = p.to_string_lossy();
            s.ends_with("PT1H.json") && s.contains(&format!("/d={day}/h={hour}/"))
        })
        .collect();
    v.sort();
    v
}

/// Keep the first `n` records of a blob (or all but the last when `n` is `None`).
fn cut_records(path: &Path, n: Option<usize>) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let r = v["records"].as_array_mut().unwrap();
    let keep = n.unwrap_or(r.len() - 1);
    r.truncate(keep);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn state_dir_runs_equal_a_fresh_full_run_after_every_change() {
    // Six NICs over 54 hours: three UTC days, connections crossing midnight, every attack.
    let c = tempfile::tempdir().unwrap();
    nsgflow()
        .args([
            "gen",
            "--out",
            c.path().to_str().unwrap(),
            "--seed",
            "3",
            "--nsgs",
            "2",
        ])
        .args([
            "--nics-per-nsg",
            "3",
            "--hours",
            "54",
            "--start",
            "2026-01-05T20:00:00Z",
        ])
        .args(["--flows-per-minute", "2", "--attacks"])
        .assert()
        .success();
    let states = tempfile::tempdir().unwrap();
    // The last hour (d=08 h=01) arrives later; one of its blobs arrives half written.
    let last = pt1h(c.path(), "08", "01");
    assert_eq!(last.len(), 6);
    let held = tempfile::tempdir().unwrap();
    for (i, p) in last.iter().enumerate() {
        std::fs::copy(p, held.path().join(i.to_string())).unwrap();
        std::fs::remove_file(p).unwrap();
    }
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));

    // A full run: everything read.
    let (st, first) = state_run_equals_fresh(c.path(), states.path(), &[]);
    assert_eq!(
        (n(&st, "blobs_read"), n(&st, "blobs_from_state")),
        (318, 0),
        "{st}"
    );
    assert_eq!((n(&st, "units"), n(&st, "units_read")), (24, 24), "{st}");

    // Nothing changed: no blob read, the same bytes.
    let (st, again) = state_run_equals_fresh(c.path(), states.path(), &[]);
    assert_eq!((n(&st, "blobs_read"), n(&st, "bytes_read")), (0, 0), "{st}");
    assert_eq!(n(&st, "blobs_from_state"), 318);
    assert!(again == first);

    // A new hour: only its day's units are read (h=00 and h=01 of each NIC's 8 January).
    for (i, p) in last.iter().enumerate() {
        std::fs::copy(held.path().join(i.to_string()), p).unwrap();
    }
    cut_records(&last[0], Some(20));
    let (st, _) = state_run_equals_fresh(c.path(), states.path(), &[]);
    assert_eq!(
        (n(&st, "blobs_read"), n(&st, "units_read")),
        (12, 6),
        "{st}"
    );
    assert_eq!(n(&st, "units"), 24, "{st}");

    // The open hour grew: its NIC's day is read again, nothing else.
    std::fs::copy(held.path().join("0"), &last[0]).unwrap();
    let (st, _) = state_run_equals_fresh(c.path(), states.path(), &[]);
    assert_eq!((n(&st, "blobs_read"), n(&st, "units_read")), (2, 1), "{st}");

    // A blob in the middle of a NIC's chain rewritten with other content: that NIC-day is
    // read; the days after it are read again only if it ends with other open connections.
    let mid = &pt1h(c.path(), "06", "12")[2];
    cut_records(mid, None);
    let (st, _) = state_run_equals_fresh(c.path(), states.path(), &[]);
    assert!((24..=24 + 23).contains(&n(&st, "blobs_read")), "{st}");
    assert!(n(&st, "units_read") <= 2, "{st}");

    // A blob deleted.
    std::fs::remove_file(&pt1h(c.path(), "07", "03")[4]).unwrap();
    let (st, _) = state_run_equals_fresh(c.path(), states.path(), &[]);
    assert_eq!(
        (n(&st, "blobs_read"), n(&st, "units_read")),
        (23, 1),
        "{st}"
    );

    // A window cutting into two days: the days it cuts are read, the others dropped; the
    // same window again reads nothing; a moved edge reads only the days it cuts.
    let w = [
        "--since",
        "2026-01-06T10:30:00Z",
        "--until",
        "2026-01-07T05:00:00Z",
    ];
    let (st, _) = state_run_equals_fresh(c.path(), states.path(), &w);
    assert_eq!((n(&st, "units"), n(&st, "units_dropped")), (12, 12), "{st}");
    let (st, _) = state_run_equals_fresh(c.path(), states.path(), &w);
    assert_eq!(n(&st, "blobs_read"), 0, "{st}");
    let w2 = [
        "--since",
        "2026-01-06T11:30:00Z",
        "--until",
        "2026-01-07T05:00:00Z",
    ];
    let (st, _) = state_run_equals_fresh(c.path(), states.path(), &w2);
    assert_eq!(n(&st, "units_read"), 6, "{st}");

    // The other aggregate commands through a state equal their full runs, and read nothing
    // the second time.
    let cmds: [&[&str]; 7] = [
        &[
            "top",
            "--by",
            "connection",
            "--metric",
            "duration",
            "-n",
            "30",
            "--format",
            "json",
        ],
        &["anomalies", "--format", "json"],
        &[
            "audit",
            "--rules",
            "fixtures/definitions/az-nsg-list.json",
            "--format",
            "json",
        ],
        &[
            "top",
            "--by",
            "src",
            "--metric",
            "distinct-dport",
            "-n",
            "50",
            "--format",
            "json",
        ],
        &[
            "top",
            "--by",
            "pair",
            "--group",
            "prefix/24",
            "--format",
            "json",
        ],
        &["timeline", "--bin", "10m", "--format", "json"],
        &[
            "graph",
            "--direction",
            "in",
            "--group",
            "prefix/24",
            "--format",
            "json",
        ],
    ];
    for (i, cmd) in cmds.iter().enumerate() {
        let sd = states.path().join(format!("cmd-{i}"));
        let run = |state: bool| {
            let mut x = nsgflow();
            x.current_dir(root())
                .arg(cmd[0])
                .arg(c.path())
                .args(&cmd[1..]);
            if state {
                x.arg("--state-dir").arg(&sd);
            }
            let o = x.output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            let v: Value =
                serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {err}"));
            let (v, st) = without_state(v, &err);
            (v, st, err)
        };
        let (want, _, _) = run(false);
        let (got, st, _) = run(true);
        assert_eq!(got, want, "{cmd:?}");
        assert_eq!(st["blobs_read"], 323, "{cmd:?}");
        let (got, st, err) = run(true);
        assert_eq!(got, want, "{cmd:?}");
        assert_eq!(st["blobs_read"], 0, "{cmd:?}: {err}");
        // A blob touched (a new modification time): its NIC-day is read, the rest loaded.
        let f = std::fs::File::options().write(true).open(&last[1]).unwrap();
        f.set_modified(
            std::time::SystemTime::now() + std::time::Duration::from_secs(60 * (i as u64 + 1)),
        )
        .unwrap();
        drop(f);
        let (got, st, err) = run(true);
        assert_eq!(got, want, "{cmd:?}");
        assert_eq!(st["blobs_read"], 2, "{cmd:?}: {err}");
    }
}

#[test]
fn a_killed_run_is_recovered_and_a_damaged_state_is_never_used() {
    let states = tempfile::tempdir().unwrap();
    let sd = states.path().join("s");
    let run = |extra: &[&str]| {
        let o = nsgflow()
            .current_dir(root())
            .args([
                "summary",
                "fixtures/container",
                "--format",
                "json",
                "--state-dir",
            ])
            .arg(&sd)
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            o,
        )
    };
    let (code, _, o) = run(&[]);
    assert_eq!(code, Some(0));
    let (want, st) = summary_split(&o);
    assert_eq!(
        (st["blobs_read"].as_u64(), st["units"].as_u64()),
        (Some(24), Some(6))
    );

    // A run killed while writing: half-written temporary files and a unit file the
    // manifest never named. The next run uses the last complete state and tidies up.
    std::fs::write(sd.join(".tmpAbC123"), b"{\"magic\":\"nsgfl").unwrap();
    std::fs::write(sd.join("units/.tmpXyZ987"), [0xa4, 0x01]).unwrap();
    std::fs::write(
        sd.join("units/u-00000000000000000000000000000000.cbor"),
        [0x82],
    )
    .unwrap();
    let (code, err, o) = run(&[]);
    assert_eq!(code, Some(0), "{err}");
    let (got, st) = summary_split(&o);
    assert_eq!(got, want);
    assert_eq!(
        (st["blobs_read"].as_u64(), st["blobs_from_state"].as_u64()),
        (Some(0), Some(24))
    );
    let mut left: Vec<String> = std::fs::read_dir(sd.join("units"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 6, "{left:?}");
    assert!(left
        .iter()
        .all(|n| n.starts_with("u-") && n != "u-00000000000000000000000000000000.cbor"));
    assert!(!sd.join(".tmpAbC123").exists());

    // A state folder under the input is nsgflow's own, listed and never read as input.
    let c = tempfile::tempdir().unwrap();
    copy_tree(&root().join("fixtures/container"), c.path());
    let inner = c.path().join("nsgflow-state");
    for round in 0..2 {
        let o = nsgflow()
            .arg("summary")
            .arg(c.path())
            .args(["--format", "json", "--state-dir"])
            .arg(&inner)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (v, st) = summary_split(&o);
        assert_eq!(v["ledger"]["blobs"], 24);
        // The folder is made by the first run, after discovery.
        if round == 1 {
            assert_eq!(
                v["ledger"]["skipped_paths"][0]["reason"],
                "an nsgflow --state-dir folder (its own state): not read as input"
            );
            assert_eq!(st["blobs_from_state"], 24);
        }
    }

    // Other options: rebuilt, with a message saying which.
    let (code, err, o) = run(&["--dedup"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("other options (") && err.contains("rebuilding it with a full read"),
        "{err}"
    );
    assert_eq!(summary_split(&o).1["blobs_read"], 24);
    assert!(summary_split(&o).1["rebuilt"]
        .as_str()
        .unwrap()
        .contains("other options"));

    // Another state version: rebuilt.
    let m = sd.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(
        &m,
        text.replace("\"state_version\": 2", "\"state_version\": 0"),
    )
    .unwrap();
    let (_, err, _) = run(&["--dedup"]);
    assert!(err.contains("the state is of version 0"), "{err}");

    // A unit file that does not match the manifest: exit 2, nothing on stdout.
    let unit = std::fs::read_dir(sd.join("units"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&unit).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&unit, &bytes).unwrap();
    let (code, err, o) = run(&["--dedup"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("damaged state") && err.contains("does not match the hash"),
        "{err}"
    );
    assert!(err.contains("remove the folder"), "{err}");
    assert!(o.stdout.is_empty());

    // A manifest cut short: exit 2.
    std::fs::write(&m, &text[..text.len() / 2]).unwrap();
    let (code, err, _) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("manifest.json is not JSON"), "{err}");

    // A folder of the user's files is not taken over; a link is not followed.
    let user = states.path().join("mine");
    std::fs::create_dir(&user).unwrap();
    std::fs::write(user.join("notes.txt"), "mine").unwrap();
    let o = nsgflow()
        .current_dir(root())
        .args(["summary", "fixtures/container", "--state-dir"])
        .arg(&user)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds other files (notes.txt)"));
    #[cfg(unix)]
    {
        let link = states.path().join("link");
        std::os::unix::fs::symlink(&user, &link).unwrap();
        let o = nsgflow()
            .current_dir(root())
            .args(["summary", "fixtures/container", "--state-dir"])
            .arg(&link)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic link"));
    }

    // Commands whose output is not an aggregate, and options that cannot be kept, refuse.
    for (args, says) in [
        (
            vec!["flows", "fixtures/container"],
            "`flows` writes every row it reads",
        ),
        (
            vec!["connections", "fixtures/container"],
            "`connections` writes every row it reads",
        ),
        (
            vec!["summary", "fixtures/container", "--strict"],
            "--strict cannot be used with --state-dir",
        ),
    ] {
        let o = nsgflow()
            .current_dir(root())
            .args(&args)
            .arg("--state-dir")
            .arg(states.path().join("other"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{args:?}"
        );
    }
}

#[test]
fn azure_state_dir_reads_only_blobs_azure_rewrote() {
    let Some((url, ref az)) = azurite_with_fixture("state-inc") else {
        return;
    };
    let states = tempfile::tempdir().unwrap();
    let sd = states.path().join("s");
    let run = |state: bool| {
        let mut c = nsgflow_az(&url);
        c.args(["summary", az, "--format", "json"]);
        if state {
            c.arg("--state-dir").arg(&sd);
        }
        let o = c.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        summary_split(&o)
    };
    let (want, _) = run(false);
    let (got, st) = run(true);
    assert_eq!(got, want);
    assert_eq!(
        (st["blobs_read"].as_u64(), st["units"].as_u64()),
        (Some(24), Some(6))
    );
    // The manifest keeps each blob's ETag, and no credential.
    let manifest = std::fs::read_to_string(sd.join("manifest.json")).unwrap();
    let m: Value = serde_json::from_str(&manifest).unwrap();
    let blobs: Vec<&Value> = m["units"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| u["blobs"].as_array().unwrap())
        .collect();
    assert_eq!(blobs.len(), 24);
    assert!(blobs
        .iter()
        .all(|b| b["etag"].as_str().is_some_and(|e| !e.is_empty())
            && b["path"]
                .as_str()
                .unwrap()
                .starts_with("az://devstoreaccount1/state-inc/")
            && b["xxh3"].as_str().is_some_and(|h| h.len() == 32)));
    // The emulator's well-known account key must not reach the state.
    let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq";
    for f in walkdir::WalkDir::new(&sd).into_iter().map(|e| e.unwrap()) {
        if f.file_type().is_file() {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(key),
                "{}",
                f.path().display()
            );
        }
    }
    // Nothing changed: nothing downloaded.
    let (got, st) = run(true);
    assert_eq!(got, want);
    assert_eq!(
        (st["blobs_read"].as_u64(), st["bytes_read"].as_u64()),
        (Some(0), Some(0))
    );

    // Azure rewrites one blob (another ETag, other content): its NIC-day is read again, and
    // the result equals a fresh full read.
    let name = blobs[0]["path"]
        .as_str()
        .unwrap()
        .trim_start_matches("az://devstoreaccount1/state-inc/")
        .to_string();
    let local = root().join("fixtures/container").join(&name);
    let tmp = tempfile::tempdir().unwrap();
    let changed = tmp.path().join("PT1H.json");
    std::fs::copy(&local, &changed).unwrap();
    cut_records(&changed, None);
    azurite_helper(&["put", "state-inc", &name, changed.to_str().unwrap()]);
    let (want, _) = run(false);
    let (got, st) = run(true);
    assert_eq!(got, want);
    let unit_blobs = m["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["blobs"][0]["path"] == blobs[0]["path"])
        .unwrap()["blobs"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert_eq!(
        (st["blobs_read"].as_u64(), st["units_read"].as_u64()),
        (Some(unit_blobs), Some(1)),
        "{st}"
    );
}

#[test]
fn azure_downloads_run_ahead_under_the_byte_budget() {
    let Some((url, ref az)) = azurite_with_fixture("budget") else {
        return;
    };
    let (want, _) = summary_split(
        &nsgflow()
            .current_dir(root())
            .args(["summary", "fixtures/container", "--format", "json"])
            .output()
            .unwrap(),
    );
    let largest = walkdir::WalkDir::new(root().join("fixtures/container"))
        .into_iter()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    for budget in ["1", "40K", "64M", "0"] {
        let o = nsgflow_az(&url)
            .args([
                "summary",
                az,
                "--format",
                "json",
                "--download-budget",
                budget,
                "-j",
                "2",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{err}");
        let (mut got, _) = summary_split(&o);
        got["ledger"]
            .as_object_mut()
            .unwrap()
            .remove("remote_listings");
        let text = serde_json::to_string(&got)
            .unwrap()
            .replace("az://devstoreaccount1/budget/", "");
        let want_text = serde_json::to_string(&want)
            .unwrap()
            .replace(
                &format!("{}/", root().join("fixtures/container").display()),
                "",
            )
            .replace("fixtures/container/", "");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["totals"],
            serde_json::from_str::<Value>(&want_text).unwrap()["totals"],
            "--download-budget {budget}"
        );
        let line = err
            .lines()
            .find(|l| l.contains("blobs ahead of the parsers"))
            .unwrap_or_else(|| panic!("{err}"));
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        let (ahead, peak) = (nums[0], nums[1]);
        // Never more than the budget, except one blob alone when it is larger.
        let limit = match budget {
            "1" => largest,
            "40K" => (40 * 1024).max(largest),
            _ => 64 << 20,
        };
        assert!(peak <= limit, "{budget}: {line}");
        match budget {
            "0" => assert_eq!((ahead, peak), (0, 0), "{line}"),
            _ => assert!(ahead > 0 && ahead <= 24, "{line}"),
        }
    }
}

#[test]
fn a_sas_token_reads_with_read_and_list_rights_and_without_list_is_one_line() {
    let Some((url, ref az)) = azurite_with_fixture("sas-rights") else {
        return;
    };
    let sas = |perms: &str| {
        let o = std::process::Command::new("node")
            .arg(root().join("scripts/azurite.cjs"))
            .args(["sas", "sas-rights", perms])
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    let run = |token: &str| {
        let o = nsgflow_az(&url)
            .env("AZURE_STORAGE_SAS_TOKEN", token)
            .args(["summary", az, "--format", "json"])
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            o.stdout,
        )
    };
    let rl = sas("rl");
    let (code, err, out) = run(&rl);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["ledger"]["tuples"], 849);
    // The token reaches no file: not the report, the partial or the state.
    let tmp = tempfile::tempdir().unwrap();
    let o = nsgflow_az(&url)
        .env("AZURE_STORAGE_SAS_TOKEN", &rl)
        .args(["report", az, "-q", "-o"])
        .arg(tmp.path().join("r"))
        .arg("--save-partial")
        .arg(tmp.path().join("p.part"))
        .arg("--state-dir")
        .arg(tmp.path().join("s"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sig = rl.split('&').find(|p| p.starts_with("sig=")).unwrap()[4..].to_string();
    let mut files = 0;
    for f in walkdir::WalkDir::new(tmp.path())
        .into_iter()
        .map(|e| e.unwrap())
    {
        if f.file_type().is_file() {
            files += 1;
            let text = String::from_utf8_lossy(&std::fs::read(f.path()).unwrap()).into_owned();
            assert!(
                !text.contains(&sig) && !text.contains("sig="),
                "{}",
                f.path().display()
            );
        }
    }
    assert!(files > 10, "{files}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains(&sig));
    let r = sas("r");
    let sig = r
        .split('&')
        .find(|p| p.starts_with("sig="))
        .unwrap()
        .to_string();
    let (code, err, out) = run(&r);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty());
    assert_eq!(
        err.trim_end(),
        "nsgflow: authentication failed for account devstoreaccount1 (or no permission to list container sas-rights): check AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_KEY, or the SAS token's expiry and its read + list permissions (role: Storage Blob Data Reader)"
    );
    assert!(!err.contains(&sig[4..]), "{err}");
}

#[test]
fn the_emulators_path_style_url_reads_the_same_container() {
    let Some((url, ref az)) = azurite_with_fixture("path-style") else {
        return;
    };
    let totals = |input: &str| {
        let o = nsgflow_az(&url)
            .args(["summary", input, "--format", "json"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["totals"].clone(), v["ledger"]["blobs"].clone())
    };
    let path_style = format!("{}/devstoreaccount1/path-style", url.trim_end_matches('/'));
    assert_eq!(totals(&path_style), totals(az));
    assert_eq!(totals(az).1, 24);
}
