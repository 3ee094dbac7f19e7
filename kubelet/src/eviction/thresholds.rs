//! Eviction signals and thresholds (upstream `pkg/kubelet/eviction/api` and
//! `helpers.go`): `--eviction-hard` (`signal<quantity|percent`), `--eviction-minimum-reclaim`
//! (`signal=quantity|percent`), observing a signal's available amount against its capacity,
//! and deciding which thresholds are met — with the minimum reclaim added for thresholds
//! that were already met, so pressure ends only once that much more is free.

use std::collections::BTreeMap;

/// An eviction signal (upstream's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

/// The node condition a signal's pressure sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pressure {
    Memory,
    Disk,
    Pid,
}

impl Pressure {
    /// The NodeCondition type.
    pub fn condition(self) -> &'static str {
        match self {
            Pressure::Memory => "MemoryPressure",
            Pressure::Disk => "DiskPressure",
            Pressure::Pid => "PIDPressure",
        }
    }

    /// The taint the condition calls for.
    pub fn taint(self) -> &'static str {
        match self {
            Pressure::Memory => "node.kubernetes.io/memory-pressure",
            Pressure::Disk => "node.kubernetes.io/disk-pressure",
            Pressure::Pid => "node.kubernetes.io/pid-pressure",
        }
    }
}

impl Signal {
    pub const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn parse(text: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == text)
    }

    pub fn pressure(self) -> Pressure {
        match self {
            Signal::MemoryAvailable => Pressure::Memory,
            Signal::PidAvailable => Pressure::Pid,
            _ => Pressure::Disk,
        }
    }

    /// The resource the signal is about, as upstream's eviction message names it.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }
}

/// A threshold as an amount or a percentage of capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    Bytes(u64),
    Percent(u64),
}

impl Threshold {
    /// The amount for a signal whose capacity is `capacity`.
    pub fn of(self, capacity: u64) -> u64 {
        match self {
            Threshold::Bytes(b) => b.min(capacity),
            Threshold::Percent(p) => {
                u64::try_from(u128::from(capacity) * u128::from(p.min(100)) / 100)
                    .unwrap_or(u64::MAX)
            }
        }
    }

    /// `100Mi`, `10%`, or a plain count for inodes and pids.
    fn parse(value: &str, item: &str) -> Result<Threshold, String> {
        match value.trim().strip_suffix('%') {
            Some(p) => {
                let p = p
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("invalid percentage in {item:?}"))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("percentage out of range in {item:?}"));
                }
                // Whole percents: upstream's fractions are rare and round down here.
                Ok(Threshold::Percent(p as u64))
            }
            None => crate::cm::parse_quantity(value.trim())
                .filter(|n| *n >= 0)
                .and_then(|n| u64::try_from(n / 1_000_000_000).ok())
                .map(Threshold::Bytes)
                .ok_or_else(|| format!("invalid quantity in {item:?}")),
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Bytes(b) => write!(f, "{b}"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Hard eviction thresholds, also subtracted from capacity for allocatable. Upstream's
/// Linux defaults: `memory.available<100Mi`, `nodefs.available<10%`,
/// `nodefs.inodesFree<5%`, `imagefs.available<15%`; signals left out of `--eviction-hard`
/// keep their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvictionHard {
    pub memory: Threshold,
    pub nodefs: Threshold,
    pub nodefs_inodes: Option<Threshold>,
    pub imagefs: Option<Threshold>,
    pub imagefs_inodes: Option<Threshold>,
    pub pid: Option<Threshold>,
}

impl Default for EvictionHard {
    fn default() -> Self {
        EvictionHard {
            memory: Threshold::Bytes(100 * 1024 * 1024),
            nodefs: Threshold::Percent(10),
            nodefs_inodes: Some(Threshold::Percent(5)),
            imagefs: Some(Threshold::Percent(15)),
            imagefs_inodes: None,
            pid: None,
        }
    }
}

impl EvictionHard {
    /// Parses `--eviction-hard` (`signal<value`, comma separated).
    pub fn parse(text: &str) -> Result<EvictionHard, String> {
        let mut out = EvictionHard::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (signal, value) = item
                .split_once('<')
                .ok_or_else(|| format!("invalid eviction threshold {item:?}: want signal<value"))?;
            let signal = Signal::parse(signal.trim())
                .ok_or_else(|| format!("unknown eviction signal {:?}", signal.trim()))?;
            out.set(signal, Threshold::parse(value, item)?);
        }
        Ok(out)
    }

    /// From the config file's `evictionHard` map.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<EvictionHard, String> {
        let mut out = EvictionHard::default();
        for (signal, value) in map {
            let item = format!("{signal}<{value}");
            let s = Signal::parse(signal)
                .ok_or_else(|| format!("unknown eviction signal {signal:?}"))?;
            out.set(s, Threshold::parse(value, &item)?);
        }
        Ok(out)
    }

    fn set(&mut self, signal: Signal, threshold: Threshold) {
        match signal {
            Signal::MemoryAvailable => self.memory = threshold,
            Signal::NodeFsAvailable => self.nodefs = threshold,
            Signal::NodeFsInodesFree => self.nodefs_inodes = Some(threshold),
            Signal::ImageFsAvailable => self.imagefs = Some(threshold),
            Signal::ImageFsInodesFree => self.imagefs_inodes = Some(threshold),
            Signal::PidAvailable => self.pid = Some(threshold),
        }
    }

    pub fn get(&self, signal: Signal) -> Option<Threshold> {
        match signal {
            Signal::MemoryAvailable => Some(self.memory),
            Signal::NodeFsAvailable => Some(self.nodefs),
            Signal::NodeFsInodesFree => self.nodefs_inodes,
            Signal::ImageFsAvailable => self.imagefs,
            Signal::ImageFsInodesFree => self.imagefs_inodes,
            Signal::PidAvailable => self.pid,
        }
    }

    /// Every configured threshold, memory first (upstream evicts for memory first).
    pub fn thresholds(&self) -> Vec<(Signal, Threshold)> {
        Signal::ALL
            .into_iter()
            .filter_map(|s| Some((s, self.get(s)?)))
            .collect()
    }
}

/// `--eviction-minimum-reclaim`: how much more than the threshold must be free before a
/// met threshold counts as resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MinimumReclaim(pub BTreeMap<Signal, Threshold>);

impl MinimumReclaim {
    /// Parses `signal=value` items, comma separated.
    pub fn parse(text: &str) -> Result<MinimumReclaim, String> {
        let mut out = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (signal, value) = item
                .split_once('=')
                .ok_or_else(|| format!("invalid minimum reclaim {item:?}: want signal=value"))?;
            let signal = Signal::parse(signal.trim())
                .ok_or_else(|| format!("unknown eviction signal {:?}", signal.trim()))?;
            out.insert(signal, Threshold::parse(value, item)?);
        }
        Ok(MinimumReclaim(out))
    }

    /// From the config file's `evictionMinimumReclaim` map.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<MinimumReclaim, String> {
        let text: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        MinimumReclaim::parse(&text.join(","))
    }
}

/// One signal as observed: what is available of what capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

/// A threshold that is met, with the amount it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Met {
    pub signal: Signal,
    pub threshold: Threshold,
    /// The threshold's amount for the observed capacity.
    pub value: u64,
    pub observed: Observation,
}

/// The thresholds met by `observations` (upstream `thresholdsMet`): available below the
/// threshold, or — for those in `already_met` — below the threshold plus the minimum
/// reclaim. Signals without an observation are not met.
pub fn thresholds_met(
    hard: &EvictionHard,
    reclaim: &MinimumReclaim,
    observations: &BTreeMap<Signal, Observation>,
    already_met: &[Signal],
) -> Vec<Met> {
    let mut met = Vec::new();
    for (signal, threshold) in hard.thresholds() {
        let Some(observed) = observations.get(&signal) else {
            continue;
        };
        let value = threshold.of(observed.capacity);
        let mut wanted = value;
        if already_met.contains(&signal) {
            if let Some(r) = reclaim.0.get(&signal) {
                wanted = wanted.saturating_add(r.of(observed.capacity));
            }
        }
        if observed.available < wanted {
            met.push(Met {
                signal,
                threshold,
                value,
                observed: *observed,
            });
        }
    }
    met
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    #[test]
    fn parses_hard_thresholds_with_quantities_and_percentages() {
        let e = EvictionHard::parse(
            "memory.available<200Mi, nodefs.available<5%,imagefs.available<15%,nodefs.inodesFree<1000",
        )
        .unwrap();
        assert_eq!(e.memory, Threshold::Bytes(200 * MI));
        assert_eq!(e.nodefs, Threshold::Percent(5));
        assert_eq!(e.imagefs, Some(Threshold::Percent(15)));
        assert_eq!(e.nodefs_inodes, Some(Threshold::Bytes(1000)));
        let pct = EvictionHard::parse("memory.available<10%").unwrap();
        assert_eq!(pct.memory, Threshold::Percent(10));
        assert_eq!(pct.memory.of(1000), 100);
        assert_eq!(EvictionHard::parse("").unwrap(), EvictionHard::default());
        assert_eq!(
            EvictionHard::from_map(&BTreeMap::from([(
                "memory.available".to_owned(),
                "1Gi".to_owned()
            )]))
            .unwrap()
            .memory,
            Threshold::Bytes(1024 * MI)
        );
        for bad in [
            "memory.available=1",
            "cpu.available<1",
            "memory.available<lots",
            "nodefs.available<120%",
            "memory.available<-1Mi",
        ] {
            assert!(EvictionHard::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn parses_minimum_reclaim() {
        let r = MinimumReclaim::parse(
            "memory.available=0Mi,nodefs.available=500Mi,imagefs.available=2%",
        )
        .unwrap();
        assert_eq!(r.0[&Signal::MemoryAvailable], Threshold::Bytes(0));
        assert_eq!(r.0[&Signal::NodeFsAvailable], Threshold::Bytes(500 * MI));
        assert_eq!(r.0[&Signal::ImageFsAvailable], Threshold::Percent(2));
        assert!(MinimumReclaim::parse("memory.available<1").is_err());
    }

    #[test]
    fn thresholds_are_met_below_the_value_and_cleared_above_the_reclaim() {
        let hard = EvictionHard::parse("memory.available<100Mi,nodefs.available<10%").unwrap();
        let reclaim = MinimumReclaim::parse("memory.available=50Mi").unwrap();
        let obs = |mem: u64, disk: u64| {
            BTreeMap::from([
                (
                    Signal::MemoryAvailable,
                    Observation {
                        available: mem * MI,
                        capacity: 1000 * MI,
                    },
                ),
                (
                    Signal::NodeFsAvailable,
                    Observation {
                        available: disk * MI,
                        capacity: 1000 * MI,
                    },
                ),
            ])
        };
        let signals = |m: Vec<Met>| m.into_iter().map(|m| m.signal).collect::<Vec<_>>();
        assert!(thresholds_met(&hard, &reclaim, &obs(500, 500), &[]).is_empty());
        assert_eq!(
            signals(thresholds_met(&hard, &reclaim, &obs(99, 500), &[])),
            vec![Signal::MemoryAvailable]
        );
        assert_eq!(
            signals(thresholds_met(&hard, &reclaim, &obs(99, 99), &[])),
            vec![Signal::MemoryAvailable, Signal::NodeFsAvailable]
        );
        // Freed up to 120Mi: no longer below 100Mi, but still within the 50Mi reclaim.
        assert!(thresholds_met(&hard, &reclaim, &obs(120, 500), &[]).is_empty());
        assert_eq!(
            signals(thresholds_met(
                &hard,
                &reclaim,
                &obs(120, 500),
                &[Signal::MemoryAvailable]
            )),
            vec![Signal::MemoryAvailable]
        );
        assert!(
            thresholds_met(&hard, &reclaim, &obs(151, 500), &[Signal::MemoryAvailable]).is_empty()
        );
        let met = thresholds_met(&hard, &reclaim, &obs(500, 50), &[]);
        assert_eq!(met[0].value, 100 * MI);
        assert_eq!(met[0].signal.pressure(), Pressure::Disk);
    }
}
