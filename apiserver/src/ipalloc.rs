//! Service ClusterIP and NodePort allocation. State is rebuilt from the stored Services at
//! start, so allocations stay consistent across apiserver restarts.

use ipnet::IpNet;
use rand::Rng;
use std::collections::HashSet;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("failed to allocate a serviceIP: range is full")]
    IpRangeFull,
    #[error("failed to allocate a nodePort: range is full")]
    PortRangeFull,
    #[error("provided IP is already allocated")]
    IpAllocated,
    #[error("provided IP is not in the valid range. The range of valid IPs is {0}")]
    IpOutOfRange(String),
    #[error("provided port is already allocated")]
    PortAllocated,
    #[error("provided port is not in the valid range. The range of valid ports is {0}")]
    PortOutOfRange(String),
}

/// Allocated ClusterIPs within the service CIDR, by offset from the network address.
#[derive(Debug)]
pub struct IpAllocator {
    range: IpNet,
    size: u128,
    used: HashSet<u128>,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl IpAllocator {
    pub fn new(range: IpNet) -> Self {
        let host_bits = range.max_prefix_len() - range.prefix_len();
        let total: u128 = if host_bits >= 127 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        // The network address and (for IPv4) the broadcast address are never handed out.
        let size = match range {
            IpNet::V4(_) => total.saturating_sub(2),
            IpNet::V6(_) => total.saturating_sub(1).min(1 << 20),
        };
        IpAllocator {
            range,
            size,
            used: HashSet::new(),
        }
    }

    /// The first address of the range: the `kubernetes` Service's ClusterIP.
    pub fn first(&self) -> IpAddr {
        self.at(1)
    }

    fn at(&self, offset: u128) -> IpAddr {
        let base = to_u128(self.range.network());
        match self.range {
            IpNet::V4(_) => IpAddr::V4(((base + offset) as u32).into()),
            IpNet::V6(_) => IpAddr::V6((base + offset).into()),
        }
    }

    fn offset(&self, ip: IpAddr) -> Result<u128, AllocError> {
        if !self.range.contains(&ip) {
            return Err(AllocError::IpOutOfRange(self.range.to_string()));
        }
        let off = to_u128(ip) - to_u128(self.range.network());
        if off == 0 || off > self.size {
            return Err(AllocError::IpOutOfRange(self.range.to_string()));
        }
        Ok(off)
    }

    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), AllocError> {
        let off = self.offset(ip)?;
        if !self.used.insert(off) {
            return Err(AllocError::IpAllocated);
        }
        Ok(())
    }

    /// Allocates a free address, chosen at random as upstream does.
    pub fn allocate_next(&mut self) -> Result<IpAddr, AllocError> {
        if self.used.len() as u128 >= self.size {
            return Err(AllocError::IpRangeFull);
        }
        let start = rand::rng().random_range(1..=self.size);
        let mut off = start;
        loop {
            if !self.used.contains(&off) {
                self.used.insert(off);
                return Ok(self.at(off));
            }
            off = if off == self.size { 1 } else { off + 1 };
            if off == start {
                return Err(AllocError::IpRangeFull);
            }
        }
    }

    pub fn release(&mut self, ip: IpAddr) {
        if let Ok(off) = self.offset(ip) {
            self.used.remove(&off);
        }
    }
}

/// Allocated NodePorts within `--service-node-port-range`.
#[derive(Debug)]
pub struct PortAllocator {
    base: u16,
    max: u16,
    used: HashSet<u16>,
}

impl PortAllocator {
    pub fn new(base: u16, max: u16) -> Self {
        PortAllocator {
            base,
            max,
            used: HashSet::new(),
        }
    }

    fn range(&self) -> String {
        format!("{}-{}", self.base, self.max)
    }

    pub fn allocate(&mut self, port: u16) -> Result<(), AllocError> {
        if port < self.base || port > self.max {
            return Err(AllocError::PortOutOfRange(self.range()));
        }
        if !self.used.insert(port) {
            return Err(AllocError::PortAllocated);
        }
        Ok(())
    }

    pub fn allocate_next(&mut self) -> Result<u16, AllocError> {
        let span = (self.max - self.base) as u32 + 1;
        if self.used.len() as u32 >= span {
            return Err(AllocError::PortRangeFull);
        }
        let start = rand::rng().random_range(0..span);
        for i in 0..span {
            let port = self.base + ((start + i) % span) as u16;
            if self.used.insert(port) {
                return Ok(port);
            }
        }
        Err(AllocError::PortRangeFull)
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_unique_and_released() {
        let mut a = IpAllocator::new("10.0.0.0/29".parse().unwrap());
        assert_eq!(a.first().to_string(), "10.0.0.1");
        a.allocate(a.first()).unwrap();
        assert_eq!(
            a.allocate("10.0.0.1".parse().unwrap()),
            Err(AllocError::IpAllocated)
        );
        let mut got = HashSet::new();
        for _ in 0..5 {
            got.insert(a.allocate_next().unwrap());
        }
        assert_eq!(got.len(), 5);
        assert_eq!(a.allocate_next(), Err(AllocError::IpRangeFull));
        assert!(matches!(
            a.allocate("10.0.0.7".parse().unwrap()),
            Err(AllocError::IpOutOfRange(_))
        ));
        assert!(matches!(
            a.allocate("10.0.1.1".parse().unwrap()),
            Err(AllocError::IpOutOfRange(_))
        ));
        a.release("10.0.0.3".parse().unwrap());
        assert_eq!(a.allocate_next().unwrap().to_string(), "10.0.0.3");
    }

    #[test]
    fn ports_are_unique() {
        let mut p = PortAllocator::new(30000, 30002);
        p.allocate(30001).unwrap();
        assert_eq!(p.allocate(30001), Err(AllocError::PortAllocated));
        let a = p.allocate_next().unwrap();
        let b = p.allocate_next().unwrap();
        assert_ne!(a, b);
        assert_eq!(p.allocate_next(), Err(AllocError::PortRangeFull));
        assert!(matches!(p.allocate(80), Err(AllocError::PortOutOfRange(_))));
    }
}
