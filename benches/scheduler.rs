//! Scheduler throughput: node completions per second on a chain and on a wide fan-out.
//!
//! Each completion is one full step of the core: pop a ready node, compute its value from its
//! dependency, set it, release the dependency, and make its listeners ready.
//!
//! Values are `NonZeroU64`, so a stored `Option<V>` takes 8 bytes, as `Option<Py<PyAny>>` does in
//! the bindings (a plain `u64` would double the value array and measure a layout nobody runs).

use std::num::NonZeroU64;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nnsight_core::{Graph, Kind, NodeId, ROOT_ARGUMENT};

type V = NonZeroU64;

fn root(g: &mut Graph<V>) -> NodeId {
    g.add_node(None, "argument", Kind::Argument, &[], Some(ROOT_ARGUMENT))
        .expect("root")
}

/// root -> op -> op -> ... -> op -> save
fn chain(n: usize) -> Graph<V> {
    let mut g = Graph::new();
    let mut prev = root(&mut g);
    for _ in 0..n {
        prev = g
            .add_node(None, "add", Kind::Op, &[prev], None)
            .expect("op");
    }
    g.add_node(None, "null", Kind::Null, &[prev], None)
        .expect("save");
    g
}

/// root -> n independent ops, every one saved.
fn fan_out(n: usize) -> Graph<V> {
    let mut g = Graph::new();
    let r = root(&mut g);
    for _ in 0..n {
        let op = g.add_node(None, "add", Kind::Op, &[r], None).expect("op");
        g.add_node(None, "null", Kind::Null, &[op], None)
            .expect("save");
    }
    g
}

fn run(g: &mut Graph<V>, released: &mut Vec<V>) {
    g.compile(released);
    let root = g.root().expect("root");
    g.set_value(root, NonZeroU64::MIN, released)
        .expect("set root");
    g.drain(0, released, |node| {
        let prev = node.input(0).copied().unwrap_or(NonZeroU64::MIN);
        Ok::<_, nnsight_core::GraphError>(Some(prev.saturating_add(1)))
    })
    .expect("drain");
    released.clear();
}

fn bench(c: &mut Criterion) {
    for (shape, build) in [
        ("chain", chain as fn(usize) -> Graph<V>),
        ("fan_out", fan_out),
    ] {
        let mut group = c.benchmark_group(format!("scheduler/{shape}"));
        group.sample_size(10);
        for n in [1_000usize, 10_000, 100_000, 1_000_000] {
            let mut g = build(n);
            let mut released = Vec::with_capacity(n + 1);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| run(&mut g, &mut released))
            });
        }
        group.finish();
        // The reset alone (part of every run above): how much of a run is plain memory traffic.
        let mut group = c.benchmark_group(format!("compile/{shape}"));
        group.sample_size(10);
        for n in [1_000usize, 1_000_000] {
            let mut g = build(n);
            let mut released = Vec::with_capacity(n + 1);
            run(&mut g, &mut released);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| g.compile(&mut released))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
