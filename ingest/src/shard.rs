//! Series → shard: a stable hash of the label set, the same in every
//! process and version (FNV-1a 64 over `name 0xff value 0xff ...`).

use std::collections::BTreeMap;

use strata_model::{Labels, WriteBatch};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable 64-bit hash of a label set.
pub fn labels_hash(labels: &Labels) -> u64 {
    let mut h = FNV_OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    };
    for l in labels {
        feed(l.name.as_bytes());
        feed(&[0xff]);
        feed(l.value.as_bytes());
        feed(&[0xff]);
    }
    h
}

/// The shard of a series among `shards` (at least 1).
pub fn shard_of(labels: &Labels, shards: u32) -> u32 {
    let n = u64::from(shards.max(1));
    u32::try_from(labels_hash(labels) % n).unwrap_or(0)
}

/// Splits a batch into one batch per shard, keeping series order.
pub fn split_by_shard(batch: WriteBatch, shards: u32) -> BTreeMap<u32, WriteBatch> {
    let mut out: BTreeMap<u32, WriteBatch> = BTreeMap::new();
    let tenant = batch.tenant;
    for s in batch.series {
        let shard = shard_of(&s.labels, shards);
        out.entry(shard).or_insert_with(|| WriteBatch::new(tenant.clone())).series.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strata_model::Sample;

    #[test]
    fn hash_is_stable_across_versions() {
        // Pinned: changing the hash would move every series to another shard.
        let l = Labels::from_pairs([("__name__", "up"), ("job", "node")]).expect("labels");
        assert_eq!(labels_hash(&l), 0x7bfed62635f64858);
        assert_eq!(shard_of(&l, 64), 24);
        assert_eq!(shard_of(&l, 1), 0);
    }

    proptest! {
        #[test]
        fn split_keeps_every_series_once(names in prop::collection::vec("[a-z]{1,6}", 0..40), shards in 1u32..70) {
            let mut b = WriteBatch::new("t");
            for (i, n) in names.iter().enumerate() {
                let l = Labels::from_pairs([("__name__", n.clone()), ("i", i.to_string())]).expect("labels");
                b.push(l, Sample::new(i as i64, 1.0));
            }
            let total = b.series.len();
            let parts = split_by_shard(b, shards);
            prop_assert_eq!(parts.values().map(|p| p.series.len()).sum::<usize>(), total);
            for (shard, part) in &parts {
                prop_assert!(*shard < shards);
                for s in &part.series {
                    prop_assert_eq!(shard_of(&s.labels, shards), *shard);
                }
            }
        }

        #[test]
        fn shards_spread_series(seed in 0u64..1000) {
            let shards = 8u32;
            let mut counts = [0usize; 8];
            for i in 0..800u64 {
                let l = Labels::from_pairs([("__name__", "m".to_owned()), ("i", (seed * 1000 + i).to_string())]).expect("labels");
                counts[shard_of(&l, shards) as usize] += 1;
            }
            // Every shard gets a fair part (expected 100).
            prop_assert!(counts.iter().all(|&c| c > 50), "{:?}", counts);
        }
    }
}
