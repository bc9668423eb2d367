//! The loader pool of inference: worker threads decode and preprocess items ahead of the
//! forward pass, never more than a fixed window of items ahead of it, and hand them over
//! as batches in input order; how a machine's threads are split between the loaders and
//! libtorch.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::data::{Item, ItemLoader, LoadFailure, LoadedBatch};

/// Threads given to the loader pool and to libtorch's intra-op pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSplit {
    pub loaders: usize,
    pub torch: usize,
}

impl ThreadSplit {
    /// Splits `total` threads (default: the machine's) between loaders and libtorch.
    /// libtorch gets half, the odd one included (on 2 cores one thread: its threads wait
    /// for each other at every operation, so one of them losing its core to a loader
    /// stalls them all). The loaders get the other half and one more: loading a 1 mm
    /// volume (gunzip, decoding, resampling, registration) costs more than its forward
    /// pass, so the network's core is idle while it waits for a batch, and the extra
    /// loader takes that time (2 cores, 40 cold 1 mm volumes: 84-89 against 115-122 ms
    /// per volume, docs/benchmarks.md). The loaders never change what a batch holds, so
    /// the predictions are those of one loader bit for bit. `loaders` overrides the
    /// loaders' share; libtorch then gets the rest.
    pub fn new(total: Option<usize>, loaders: Option<usize>) -> Self {
        let total = Self::total(total);
        match loaders {
            Some(loaders) => {
                let loaders = loaders.max(1);
                Self {
                    loaders,
                    torch: total.saturating_sub(loaders).max(1),
                }
            }
            None => Self {
                loaders: total / 2 + 1,
                torch: (total - total / 2).max(1),
            },
        }
    }

    /// `total` threads, default the machine's.
    fn total(total: Option<usize>) -> usize {
        total
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// libtorch's threads for a run whose tensors are all cached: all `total` (default
    /// the machine's), since the loaders then only read one file per image (on 2 cores,
    /// 96 cached 1 mm FLAIR volumes: 28 ms per volume against 49 ms with the cold split,
    /// docs/benchmarks.md). `None` when the user chose the loaders, whose split then
    /// stands.
    pub fn warm_threads(total: Option<usize>, loaders: Option<usize>) -> Option<usize> {
        loaders.is_none().then(|| Self::total(total))
    }
}

/// Which items workers may take: the next one, and the first one they may not take yet.
struct Claims {
    next: usize,
    limit: usize,
}

struct Shared {
    claims: Mutex<Claims>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn claims(&self) -> MutexGuard<'_, Claims> {
        // A worker that panicked while holding the lock left the counters consistent
        // (they are only ever incremented under it).
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type Loaded = (usize, Result<Vec<f32>, LoadFailure>);

/// Batches of consecutive items, loaded by `loaders` worker threads at most `window`
/// items ahead of the batch last handed out, so memory stays bounded however slow the
/// consumer is. Each item loads exactly as [`ItemLoader::load`] loads it alone, and
/// batches hold the same items in the same order whatever the number of workers.
pub struct LoaderPool {
    shared: Arc<Shared>,
    receiver: Receiver<Loaded>,
    workers: Vec<JoinHandle<()>>,
    arrived: BTreeMap<usize, Result<Vec<f32>, LoadFailure>>,
    total: usize,
    batch_size: usize,
    window: usize,
    next_batch: usize,
}

impl LoaderPool {
    /// Starts `loaders` workers over `items`, batches of `batch_size`, up to
    /// `ahead_batches` batches loaded beyond the one the consumer holds.
    pub fn start(
        items: Arc<Vec<Item>>,
        loader: ItemLoader,
        batch_size: usize,
        loaders: usize,
        ahead_batches: usize,
    ) -> Self {
        let total = items.len();
        let batch_size = batch_size.max(1);
        let window = batch_size * (ahead_batches.max(1) + 1);
        let shared = Arc::new(Shared {
            claims: Mutex::new(Claims {
                next: 0,
                limit: window,
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (sender, receiver) = channel();
        let workers = (0..loaders.max(1).min(total.max(1)))
            .map(|_| {
                let shared = Arc::clone(&shared);
                let items = Arc::clone(&items);
                let loader = loader.clone();
                let sender = sender.clone();
                std::thread::spawn(move || {
                    while let Some(index) = claim(&shared, total) {
                        let item = &items[index];
                        let result = catch_unwind(AssertUnwindSafe(|| loader.load(item)))
                            .unwrap_or_else(|_| {
                                Err(LoadFailure::Error(format!(
                                    "{}: loading the image failed unexpectedly",
                                    item.id
                                )))
                            });
                        if sender.send((index, result)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Self {
            shared,
            receiver,
            workers,
            arrived: BTreeMap::new(),
            total,
            batch_size,
            window,
            next_batch: 0,
        }
    }
}

/// The next item a worker may load, waiting while it is beyond the window; `None` once
/// every item is taken or the pool stops.
fn claim(shared: &Shared, total: usize) -> Option<usize> {
    let mut claims = shared.claims();
    loop {
        if shared.stop.load(Ordering::SeqCst) || claims.next >= total {
            return None;
        }
        if claims.next < claims.limit {
            claims.next += 1;
            return Some(claims.next - 1);
        }
        claims = shared
            .wake
            .wait(claims)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

impl Iterator for LoaderPool {
    type Item = LoadedBatch;

    fn next(&mut self) -> Option<LoadedBatch> {
        let start = self.next_batch;
        if start >= self.total {
            return None;
        }
        let end = (start + self.batch_size).min(self.total);
        while (start..end).any(|index| !self.arrived.contains_key(&index)) {
            match self.receiver.recv() {
                Ok((index, result)) => {
                    self.arrived.insert(index, result);
                }
                // Every worker is gone; what did not arrive is reported as not processed.
                Err(_) => break,
            }
        }
        let mut batch = LoadedBatch {
            indices: (start..end).collect(),
            values: Vec::new(),
            loaded: Vec::new(),
            failures: Vec::new(),
        };
        for index in start..end {
            match self.arrived.remove(&index) {
                Some(Ok(values)) => {
                    if batch.values.is_empty() {
                        batch.values.reserve(values.len() * (end - start));
                    }
                    batch.values.extend_from_slice(&values);
                    batch.loaded.push(index);
                }
                Some(Err(message)) => batch.failures.push((index, message)),
                None => batch
                    .failures
                    .push((index, LoadFailure::Error("item was not processed".into()))),
            }
        }
        self.next_batch = end;
        self.shared.claims().limit = end + self.window;
        self.shared.wake.notify_all();
        Some(batch)
    }
}

impl Drop for LoaderPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Taking the lock orders the flag before any worker's next look at it.
        drop(self.shared.claims());
        self.shared.wake.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::preset::Preset;
    use std::sync::atomic::AtomicUsize;

    fn counting_items(
        count: usize,
        voxels: usize,
        fail: &[usize],
        loads: &Arc<AtomicUsize>,
        in_flight_peak: &Arc<AtomicUsize>,
        consumed: &Arc<AtomicUsize>,
    ) -> Vec<Item> {
        (0..count)
            .map(|i| {
                let fails = fail.contains(&i);
                let loads = Arc::clone(loads);
                let peak = Arc::clone(in_flight_peak);
                let consumed = Arc::clone(consumed);
                Item {
                    soft_label: None,
                    id: format!("item{i}"),
                    source: super::super::data::ItemSource::Loader(Arc::new(move || {
                        let started = loads.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(
                            started.saturating_sub(consumed.load(Ordering::SeqCst)),
                            Ordering::SeqCst,
                        );
                        if fails {
                            return Err(format!("item{i}: broken file"));
                        }
                        if i == 5 {
                            panic!("decoder bug");
                        }
                        Ok(vec![i as f32; voxels])
                    })),
                    label: None,
                }
            })
            .collect()
    }

    #[test]
    fn batches_come_in_order_with_failures_and_panics_flagged_and_a_bounded_window() {
        let preset = Preset::builtin("tiny").unwrap();
        let voxels = preset.preprocess.voxel_count();
        for loaders in [1, 2, 3, 8] {
            let loads = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let consumed = Arc::new(AtomicUsize::new(0));
            let items = counting_items(23, voxels, &[2, 17], &loads, &peak, &consumed);
            let pool = LoaderPool::start(
                Arc::new(items),
                ItemLoader::new(preset.clone(), None),
                4,
                loaders,
                2,
            );
            let mut seen = Vec::new();
            for batch in pool {
                std::thread::sleep(std::time::Duration::from_millis(2));
                consumed.fetch_add(batch.indices.len(), Ordering::SeqCst);
                assert_eq!(batch.values.len(), batch.loaded.len() * voxels);
                for (k, &index) in batch.loaded.iter().enumerate() {
                    assert_eq!(batch.values[k * voxels], index as f32);
                }
                for (index, message) in &batch.failures {
                    match index {
                        2 | 17 => assert!(message.message().contains("broken file"), "{message}"),
                        5 => assert!(
                            message
                                .message()
                                .contains("item5: loading the image failed")
                        ),
                        other => panic!("item {other} failed: {message}"),
                    }
                }
                seen.extend(batch.indices);
            }
            assert_eq!(seen, (0..23).collect::<Vec<_>>(), "{loaders} loaders");
            assert_eq!(loads.load(Ordering::SeqCst), 23);
            // Never more than the batch handed out and the window (3 batches of 4) after it
            // loaded beyond what was consumed.
            assert!(peak.load(Ordering::SeqCst) <= 16, "{loaders} loaders");
        }
    }

    #[test]
    fn dropping_the_pool_early_stops_the_workers() {
        let preset = Preset::builtin("tiny").unwrap();
        let voxels = preset.preprocess.voxel_count();
        let loads = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let consumed = Arc::new(AtomicUsize::new(0));
        let items = counting_items(400, voxels, &[], &loads, &peak, &consumed);
        let mut pool = LoaderPool::start(Arc::new(items), ItemLoader::new(preset, None), 2, 3, 1);
        assert_eq!(pool.next().map(|b| b.indices), Some(vec![0, 1]));
        drop(pool);
        assert!(loads.load(Ordering::SeqCst) <= 6);
    }

    #[test]
    fn a_cached_run_gives_the_network_every_thread_unless_the_loaders_were_chosen() {
        assert_eq!(ThreadSplit::warm_threads(Some(2), None), Some(2));
        assert_eq!(ThreadSplit::warm_threads(Some(1), None), Some(1));
        assert_eq!(ThreadSplit::warm_threads(Some(4), Some(2)), None);
    }

    #[test]
    fn threads_split_between_loaders_and_libtorch() {
        // libtorch keeps half (the odd one too); the loaders get the rest and one more.
        assert_eq!(
            ThreadSplit::new(Some(2), None),
            ThreadSplit {
                loaders: 2,
                torch: 1
            }
        );
        assert_eq!(
            ThreadSplit::new(Some(1), None),
            ThreadSplit {
                loaders: 1,
                torch: 1
            }
        );
        assert_eq!(
            ThreadSplit::new(Some(3), None),
            ThreadSplit {
                loaders: 2,
                torch: 2
            }
        );
        assert_eq!(
            ThreadSplit::new(Some(16), None),
            ThreadSplit {
                loaders: 9,
                torch: 8
            }
        );
        assert_eq!(
            ThreadSplit::new(Some(5), Some(1)),
            ThreadSplit {
                loaders: 1,
                torch: 4
            }
        );
    }
}
