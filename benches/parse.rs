//! Benchmarks per stage (criterion): the tuple grammar, one blob through the parser into a
//! summary, and the parallel pipeline over a generated container. Data is made by `gen`
//! into a temp dir, outside the timed part.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nsgflow::aggregate::summarize;
use nsgflow::aggregate::Summary;
use nsgflow::discover::{discover, DiscoverOptions};
use nsgflow::gen::{generate, GenFamily, GenOptions};
use nsgflow::model::Family;
use nsgflow::parse::{parse_blob, parse_tuple, ParseOptions, PathDefaults, Scratch};
use nsgflow::pipeline::RunOptions;
use std::hint::black_box;

fn tuples(c: &mut Criterion) {
    let cases = [
        (
            "nsg_v2",
            Family::NsgV2,
            "1542110379,10.5.16.4,203.0.113.115,44931,443,T,O,A,C,30,16978,24,14008",
        ),
        (
            "nsg_v2_begin",
            Family::NsgV2,
            "1542110402,94.102.49.190,10.5.16.4,28746,443,U,I,D,B,,,,",
        ),
        (
            "nsg_v1",
            Family::NsgV1,
            "1487282421,192.0.2.95,10.1.0.4,51529,5358,T,I,D",
        ),
        (
            "vnet",
            Family::Vnet,
            "1663146003599,10.0.0.6,192.0.2.180,23956,443,6,O,E,NX,3,767,2,1580",
        ),
    ];
    let mut g = c.benchmark_group("parse/tuple");
    for (name, fam, s) in cases {
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), s, |b, s| {
            b.iter(|| parse_tuple(black_box(s), fam))
        });
    }
    g.finish();
}

fn container(family: GenFamily, rate: f64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    generate(&GenOptions {
        out: dir.path().to_path_buf(),
        family,
        nsgs: 2,
        nics_per_nsg: 2,
        hours: 1,
        flows_per_minute: rate,
        ..GenOptions::default()
    })
    .unwrap();
    dir
}

fn blobs(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse/blob");
    for (name, fam) in [("nsg_v2", GenFamily::Nsg), ("vnet", GenFamily::Vnet)] {
        let dir = container(fam, 300.0);
        let d = discover(&[dir.path().to_path_buf()], &DiscoverOptions::default());
        let data = std::fs::read(&d.blobs[0].path).unwrap();
        g.throughput(Throughput::Bytes(data.len() as u64));
        let mut scratch = Scratch::default();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut s = Summary::default();
                let out = parse_blob(
                    "bench",
                    &data,
                    &PathDefaults::default(),
                    &ParseOptions::default(),
                    &mut scratch,
                    &mut s,
                );
                black_box(out.ledger.tuples)
            })
        });
    }
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let dir = container(GenFamily::Mixed, 200.0);
    let d = discover(&[dir.path().to_path_buf()], &DiscoverOptions::default());
    let bytes: u64 = d.blobs.iter().map(|b| b.size).sum();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(20);
    g.bench_function("summarize", |b| {
        b.iter(|| black_box(summarize(&d.blobs, &RunOptions::default()).totals))
    });
    g.finish();
}

criterion_group!(benches, tuples, blobs, pipeline);
criterion_main!(benches);
