//! Enrichment: user agent (woothee) and country (bundled ranges or a MaxMind database).

use std::net::{IpAddr, Ipv4Addr};

/// What the worker adds to a click.
#[derive(Debug, Clone)]
pub struct Enriched {
    pub browser: String,
    pub os: String,
    pub device: String,
    pub country: String,
}

/// Country lookup.
pub enum Geo {
    /// The bundled table: (start, end, country), sorted.
    Ranges(Vec<(u32, u32, String)>),
    /// A MaxMind GeoIP2/GeoLite2 Country database.
    MaxMind(Box<maxminddb::Reader<Vec<u8>>>),
}

impl Geo {
    pub fn bundled() -> anyhow::Result<Self> {
        let mut v = Vec::new();
        for line in include_str!("../../../data/ip-ranges.csv").lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split(',').collect();
            anyhow::ensure!(f.len() == 3, "bad ip-ranges line: {line}");
            let a: Ipv4Addr = f[0].parse()?;
            let b: Ipv4Addr = f[1].parse()?;
            v.push((u32::from(a), u32::from(b), f[2].to_string()));
        }
        v.sort();
        Ok(Geo::Ranges(v))
    }

    pub fn maxmind(path: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Geo::MaxMind(Box::new(maxminddb::Reader::open_readfile(
            path,
        )?)))
    }

    pub fn country(&self, ip: &str) -> String {
        let Ok(addr) = ip.parse::<IpAddr>() else {
            return "??".into();
        };
        match self {
            Geo::Ranges(v) => match addr {
                IpAddr::V4(a) => {
                    let x = u32::from(a);
                    let i = v.partition_point(|(s, _, _)| *s <= x);
                    match i.checked_sub(1).map(|i| &v[i]) {
                        Some((_, e, c)) if x <= *e => c.clone(),
                        _ => "??".into(),
                    }
                }
                IpAddr::V6(_) => "??".into(),
            },
            Geo::MaxMind(r) => r
                .lookup::<maxminddb::geoip2::Country>(addr)
                .ok()
                .flatten()
                .and_then(|c| c.country.and_then(|c| c.iso_code.map(str::to_owned)))
                .unwrap_or_else(|| "??".into()),
        }
    }
}

pub fn enrich(geo: &Geo, ip: &str, user_agent: &str) -> Enriched {
    let parser = woothee::parser::Parser::new();
    let (browser, os, device) = match parser.parse(user_agent) {
        Some(r) => (r.name.to_string(), r.os.to_string(), r.category.to_string()),
        None => ("UNKNOWN".into(), "UNKNOWN".into(), "UNKNOWN".into()),
    };
    Enriched {
        browser,
        os,
        device,
        country: geo.country(ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_ranges_and_user_agents() {
        let g = Geo::bundled().unwrap();
        assert_eq!(g.country("192.0.2.7"), "FR");
        assert_eq!(g.country("203.0.113.255"), "JP");
        assert_eq!(g.country("8.8.8.8"), "??");
        assert_eq!(g.country("not an ip"), "??");
        let e = enrich(
            &g,
            "198.51.100.1",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        );
        assert_eq!(e.country, "DE");
        assert_eq!(e.browser, "Chrome");
        assert_eq!(e.device, "pc");
    }
}
