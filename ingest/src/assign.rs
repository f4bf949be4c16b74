//! Shard ownership: which aggregators keep a head for which shard.
//!
//! With `n` aggregators (StatefulSet ordinals `0..n`) and replication factor
//! `r`, shard `s` is owned by ordinals `(s + k) mod n` for `k in 0..min(r, n)`.
//! Every shard gets `min(r, n)` distinct owners, and the shards spread
//! evenly: each aggregator owns `shards * min(r, n) / n` of them, give or
//! take one. The first owner (`k = 0`) is the one that uploads blocks.

/// Ownership of `shards` shards over `aggregators` instances with replication `replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Number of logical shards.
    pub shards: u32,
    /// Number of aggregators.
    pub aggregators: u32,
    /// Replication factor.
    pub replicas: u32,
}

impl Assignment {
    /// An assignment; zero counts are treated as one.
    pub fn new(shards: u32, aggregators: u32, replicas: u32) -> Self {
        Self { shards: shards.max(1), aggregators: aggregators.max(1), replicas: replicas.max(1) }
    }

    fn effective_replicas(&self) -> u32 {
        self.replicas.min(self.aggregators)
    }

    /// The ordinals owning `shard`, the uploader first.
    pub fn owners(&self, shard: u32) -> Vec<u32> {
        (0..self.effective_replicas()).map(|k| (shard + k) % self.aggregators).collect()
    }

    /// The shards aggregator `ordinal` keeps a head for.
    pub fn shards_of(&self, ordinal: u32) -> Vec<u32> {
        (0..self.shards).filter(|&s| self.owners(s).contains(&ordinal)).collect()
    }

    /// Whether `ordinal` uploads the blocks of `shard`.
    pub fn is_uploader(&self, ordinal: u32, shard: u32) -> bool {
        shard % self.aggregators == ordinal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn three_aggregators_two_replicas() {
        let a = Assignment::new(64, 3, 2);
        assert_eq!(a.owners(0), vec![0, 1]);
        assert_eq!(a.owners(2), vec![2, 0]);
        let per: Vec<usize> = (0..3).map(|o| a.shards_of(o).len()).collect();
        assert_eq!(per.iter().sum::<usize>(), 128);
        assert!(per.iter().all(|&n| (42..=43).contains(&n)), "{per:?}");
    }

    proptest! {
        #[test]
        fn every_shard_has_distinct_owners(shards in 1u32..300, n in 1u32..12, r in 1u32..5) {
            let a = Assignment::new(shards, n, r);
            for s in 0..shards {
                let mut o = a.owners(s);
                prop_assert_eq!(o.len() as u32, r.min(n));
                prop_assert!(a.is_uploader(o[0], s));
                o.sort_unstable();
                o.dedup();
                prop_assert_eq!(o.len() as u32, r.min(n));
            }
            let loads: Vec<usize> = (0..n).map(|i| a.shards_of(i).len()).collect();
            let (lo, hi) = (loads.iter().min().copied().unwrap_or(0), loads.iter().max().copied().unwrap_or(0));
            prop_assert!(hi - lo <= r.min(n) as usize, "{:?}", loads);
        }
    }
}
