//! Published ports: Docker's `-p`/`-P` as a box's record keeps them, as passt
//! is told them, and as `ps` and `inspect` show them.
//!
//! Parsing follows docker/go-connections `nat.ParsePortSpec` (its order of
//! checks, so the same bad input gets the same message); the PORTS column
//! follows docker/cli `DisplayablePorts`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port (a range is kept as one entry a port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it is bound to; `None`: every address.
    pub host_ip: Option<IpAddr>,
    /// 0 until the host picks one ([`assign_host_ports`]).
    pub host_port: u16,
    pub box_port: u16,
    pub proto: Proto,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A `-p` value Docker refuses too, in Docker's words.
    #[error("{0}")]
    Invalid(String),
    /// Docker would publish the box port on any one port of the host range.
    #[error(
        "host port range {host} for the single box port {boxp} is not supported: \
         give one host port, or a box port range of the same length"
    )]
    HostRangeToOnePort { host: String, boxp: String },
    #[error("proto sctp is not supported: publish tcp or udp")]
    Sctp,
    #[error("Bind for {0} failed: port is already allocated")]
    Allocated(SocketAddr),
    #[error(
        "cannot bind {0}: host ports below 1024 need privileges; \
         publish on a higher host port (-p 8080:80)"
    )]
    Privileged(SocketAddr),
    /// `reason` is inline, not a source: callers show this error's message alone.
    #[error("cannot bind {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

fn invalid<T>(msg: String) -> Result<T, PortError> {
    Err(PortError::Invalid(msg))
}

/// A port number as Go's `strconv.ParseUint(s, 10, 16)` reads it (no sign).
fn port_number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `N` or `N-M` (M not below N) as its first and last port.
fn port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (port_number(a)?, port_number(b)?),
        None => (port_number(s)?, port_number(s)?),
    };
    (a <= b).then_some((a, b))
}

/// `[IP:][HOST:]BOX` at its last two colons, so an IPv6 address may go
/// without brackets (`::1:8080:80`), as Docker's `splitParts`.
fn split_parts(spec: &str) -> (&str, &str, &str) {
    let mut parts = spec.rsplitn(3, ':');
    let boxp = parts.next().unwrap_or_default();
    let host = parts.next().unwrap_or_default();
    let ip = parts.next().unwrap_or_default();
    (ip, host, boxp)
}

fn host_ip(text: &str) -> Result<Option<IpAddr>, PortError> {
    if text.is_empty() {
        return Ok(None);
    }
    let bare = match text.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']'),
        None => Some(text),
    };
    match bare.map(str::parse::<IpAddr>) {
        Some(Ok(ip)) => Ok(Some(ip)),
        _ => invalid(format!("invalid IP address: {text}")),
    }
}

/// One `-p` value: `80`, `80-81`, `8080:80`, `127.0.0.1:8080:80`,
/// `127.0.0.1::80`, `[::1]:8080:80`, `8080-8081:80-81`, each with an optional
/// `/tcp` or `/udp`. Host port 0 (or none given): the host picks one.
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, PortError> {
    let (ip, host, boxp) = split_parts(spec);
    let (boxp, proto) = boxp.split_once('/').unwrap_or((boxp, ""));
    if boxp.is_empty() {
        return invalid(format!("no port specified: {spec}<empty>"));
    }
    let proto = match proto.to_ascii_lowercase().as_str() {
        "" | "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "sctp" => return Err(PortError::Sctp),
        other => return invalid(format!("invalid proto: {other}")),
    };
    let host_ip = host_ip(ip)?;
    // Docker takes box port 0; nothing in a box can listen on it.
    let Some((b0, b1)) = port_range(boxp).filter(|&(b0, _)| b0 != 0) else {
        return invalid(format!("invalid containerPort: {boxp}"));
    };
    let hosts = if host.is_empty() {
        None
    } else {
        let Some((h0, h1)) = port_range(host) else {
            return invalid(format!("invalid hostPort: {host}"));
        };
        if h1 - h0 != b1 - b0 {
            if b0 == b1 {
                return Err(PortError::HostRangeToOnePort {
                    host: host.into(),
                    boxp: boxp.into(),
                });
            }
            return invalid(format!(
                "invalid ranges specified for container and host Ports: {boxp} and {host}"
            ));
        }
        // 0 means "pick one" only for a single port; `0-1` would bind port 1.
        if h0 == 0 && h1 != 0 {
            return invalid(format!("invalid hostPort: {host}"));
        }
        Some(h0)
    };
    Ok((b0..=b1)
        .map(|b| PortMapping {
            host_ip,
            host_port: hosts.map_or(0, |h0| if h0 == 0 { 0 } else { h0 + (b - b0) }),
            box_port: b,
            proto,
        })
        .collect())
}

/// `-P`: each of the image's `ExposedPorts` keys (`80/tcp`, `53/udp`) on a
/// port the host picks.
pub fn exposed_to_publish(exposed: &[String]) -> Result<Vec<PortMapping>, PortError> {
    let mut out = Vec::new();
    for e in exposed {
        if e.contains(':') {
            return invalid(format!("invalid exposed port: {e}"));
        }
        out.extend(parse_publish(e)?);
    }
    Ok(out)
}

fn bind_addr(m: &PortMapping, port: u16) -> SocketAddr {
    SocketAddr::new(m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port)
}

/// A socket bound as the box's passt will bind it; kept open to hold the port.
enum Held {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Held {
    fn bind(addr: SocketAddr, proto: Proto) -> io::Result<Held> {
        Ok(match proto {
            Proto::Tcp => Held::Tcp(TcpListener::bind(addr)?),
            Proto::Udp => Held::Udp(UdpSocket::bind(addr)?),
        })
    }

    fn port(&self) -> io::Result<u16> {
        match self {
            Held::Tcp(s) => s.local_addr(),
            Held::Udp(s) => s.local_addr(),
        }
        .map(|a| a.port())
    }
}

/// Gives each mapping with host port 0 a port from the kernel's ephemeral
/// range, as Docker does. All are held until the last is picked, so no two
/// mappings get the same port.
pub fn assign_host_ports(maps: &mut [PortMapping]) -> io::Result<()> {
    let mut held = Vec::new();
    for m in maps.iter_mut().filter(|m| m.host_port == 0) {
        let sock = Held::bind(bind_addr(m, 0), m.proto)?;
        m.host_port = sock.port()?;
        held.push(sock);
    }
    Ok(())
}

fn bind_error(addr: SocketAddr, e: &io::Error) -> PortError {
    match e.kind() {
        io::ErrorKind::AddrInUse => PortError::Allocated(addr),
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => PortError::Privileged(addr),
        io::ErrorKind::AddrNotAvailable => PortError::Bind {
            addr,
            reason: "the address is not one of this host's".into(),
        },
        _ => PortError::Bind {
            addr,
            reason: e.to_string(),
        },
    }
}

/// Every host port can be bound now (the box's passt binds them as it
/// starts). All are held until the last is checked, so a port given twice,
/// or on one address and on all of them, is refused like a taken one.
pub fn check_free(maps: &[PortMapping]) -> Result<(), PortError> {
    hold(maps).map(drop)
}

/// Host ports bound so that nothing else can take them while a box on a
/// bridge network has them published (by DNAT, which no socket sees).
pub struct Reserved(#[allow(dead_code)] Vec<Held>);

/// Binds every host port of `maps` and keeps them bound.
pub fn hold(maps: &[PortMapping]) -> Result<Reserved, PortError> {
    let mut held = Vec::new();
    for m in maps {
        let addr = bind_addr(m, m.host_port);
        held.push(Held::bind(addr, m.proto).map_err(|e| bind_error(addr, &e))?);
    }
    Ok(Reserved(held))
}

/// passt's `-t`/`-u` options, one a mapping: `HOST:BOX`, or `ADDR/HOST:BOX`
/// when bound to one address (passt takes IPv6 addresses without brackets).
pub fn passt_args(maps: &[PortMapping]) -> Vec<String> {
    maps.iter()
        .flat_map(|m| {
            let flag = match m.proto {
                Proto::Tcp => "-t",
                Proto::Udp => "-u",
            };
            let spec = match m.host_ip {
                Some(ip) => format!("{ip}/{}:{}", m.host_port, m.box_port),
                None => format!("{}:{}", m.host_port, m.box_port),
            };
            [flag.to_string(), spec]
        })
        .collect()
}

/// `host:port` as Go's `net.JoinHostPort`, where `port` may be a range.
/// Where a mapping is published on the host, as Docker writes it
/// (`0.0.0.0:8080`, `[::1]:8080`).
pub fn host_address(m: &PortMapping) -> String {
    join_host_port(bind_addr(m, m.host_port).ip(), &m.host_port.to_string())
}

fn join_host_port(ip: IpAddr, port: &str) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// `docker ps`'s PORTS, as docker/cli's `DisplayablePorts` builds it: sorted
/// by box port, host address, host port and protocol; ports published on the
/// same host port fold into ranges per address and protocol
/// (`0.0.0.0:80-81->80-81/tcp`) and come first; the others follow one by one
/// (`0.0.0.0:8080->80/tcp`). A mapping without an address shows as 0.0.0.0.
pub fn ps_ports(maps: &[PortMapping]) -> String {
    let mut sorted: Vec<(IpAddr, &PortMapping)> =
        maps.iter().map(|m| (bind_addr(m, 0).ip(), m)).collect();
    sorted.sort_by_key(|&(ip, m)| (m.box_port, ip, m.host_port, m.proto));

    let form = |(ip, proto): (IpAddr, Proto), first: u16, last: u16| {
        let ports = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        format!("{}->{ports}/{}", join_host_port(ip, &ports), proto.name())
    };
    // Groups in the order they were started, as Docker's `groupMapKeys`.
    let mut groups: Vec<((IpAddr, Proto), u16, u16)> = Vec::new();
    let mut done = Vec::new();
    let mut others = Vec::new();
    for (ip, m) in sorted {
        let (key, port) = ((ip, m.proto), m.box_port);
        if m.host_port != port {
            let host = join_host_port(ip, &m.host_port.to_string());
            others.push(format!("{host}->{port}/{}", m.proto.name()));
            continue;
        }
        match groups.iter_mut().find(|g| g.0 == key) {
            None => groups.push((key, port, port)),
            Some(g) if u32::from(g.2) + 1 == u32::from(port) => g.2 = port,
            Some(g) => {
                done.push(form(g.0, g.1, g.2));
                (g.1, g.2) = (port, port);
            }
        }
    }
    done.extend(groups.into_iter().map(|(key, a, b)| form(key, a, b)));
    done.extend(others);
    done.join(", ")
}

/// `{"80/tcp": [{"HostIp": .., "HostPort": ..}]}`; keys sort as Go sorts a
/// map's keys when it writes JSON.
fn bindings(maps: &[PortMapping], any_ip: &str) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for m in maps {
        let ip = m
            .host_ip
            .map_or_else(|| any_ip.to_string(), |ip| ip.to_string());
        let entry = serde_json::json!({"HostIp": ip, "HostPort": m.host_port.to_string()});
        let list = out
            .entry(format!("{}/{}", m.box_port, m.proto.name()))
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(list) = list {
            list.push(entry);
        }
    }
    serde_json::Value::Object(out)
}

/// `NetworkSettings.Ports`: where each port is bound, so `HostIp` is
/// `0.0.0.0` when no address was given.
pub fn inspect_ports(maps: &[PortMapping]) -> serde_json::Value {
    bindings(maps, "0.0.0.0")
}

/// `HostConfig.PortBindings`: as asked, so `HostIp` is `""` when no address
/// was given. `HostPort` is the chosen port: the record keeps no other.
pub fn inspect_port_bindings(maps: &[PortMapping]) -> serde_json::Value {
    bindings(maps, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use Proto::{Tcp, Udp};

    fn m(ip: Option<&str>, host: u16, boxp: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: ip.map(|s| s.parse().unwrap()),
            host_port: host,
            box_port: boxp,
            proto,
        }
    }

    fn p(spec: &str) -> Vec<PortMapping> {
        parse_publish(spec).unwrap()
    }

    fn e(spec: &str) -> String {
        parse_publish(spec).unwrap_err().to_string()
    }

    #[test]
    fn a_box_port_alone_is_published_on_a_port_the_host_picks() {
        assert_eq!(p("80"), [m(None, 0, 80, Tcp)]);
        assert_eq!(p("80/udp"), [m(None, 0, 80, Udp)]);
        assert_eq!(p("80/TCP"), [m(None, 0, 80, Tcp)]);
        assert_eq!(p("80/"), [m(None, 0, 80, Tcp)]);
        assert_eq!(p("80-81"), [m(None, 0, 80, Tcp), m(None, 0, 81, Tcp)]);
    }

    #[test]
    fn host_and_box_ports_pair_up() {
        assert_eq!(p("8080:80"), [m(None, 8080, 80, Tcp)]);
        assert_eq!(p("5353:53/udp"), [m(None, 5353, 53, Udp)]);
        assert_eq!(p("0:80"), [m(None, 0, 80, Tcp)]);
        assert_eq!(p(":80"), [m(None, 0, 80, Tcp)]);
        assert_eq!(
            p("8080-8081:80-81"),
            [m(None, 8080, 80, Tcp), m(None, 8081, 81, Tcp)]
        );
    }

    #[test]
    fn a_host_address_binds_only_there() {
        let lo = Some("127.0.0.1");
        assert_eq!(p("127.0.0.1:8080:80/tcp"), [m(lo, 8080, 80, Tcp)]);
        assert_eq!(p("127.0.0.1::80"), [m(lo, 0, 80, Tcp)]);
        assert_eq!(p("[::1]:8080:80"), [m(Some("::1"), 8080, 80, Tcp)]);
        assert_eq!(p("[::1]::80/udp"), [m(Some("::1"), 0, 80, Udp)]);
        assert_eq!(p("::1:8080:80"), [m(Some("::1"), 8080, 80, Tcp)]);
        assert_eq!(
            p("127.0.0.1:8080-8081:80-81"),
            [m(lo, 8080, 80, Tcp), m(lo, 8081, 81, Tcp)]
        );
    }

    #[test]
    fn bad_ports_get_dockers_words() {
        assert_eq!(e(""), "no port specified: <empty>");
        assert_eq!(e("80:"), "no port specified: 80:<empty>");
        assert_eq!(e("8080:/udp"), "no port specified: 8080:/udp<empty>");
        assert_eq!(e("99999:80"), "invalid hostPort: 99999");
        assert_eq!(e("a:80"), "invalid hostPort: a");
        assert_eq!(e("+8080:80"), "invalid hostPort: +8080");
        assert_eq!(e("8081-8080:80-81"), "invalid hostPort: 8081-8080");
        assert_eq!(e("0-1:80-81"), "invalid hostPort: 0-1");
        // Docker checks the box port first.
        assert_eq!(e("a:b"), "invalid containerPort: b");
        assert_eq!(e("99999"), "invalid containerPort: 99999");
        assert_eq!(e("81-80"), "invalid containerPort: 81-80");
        assert_eq!(e("0"), "invalid containerPort: 0");
        assert_eq!(e("80-"), "invalid containerPort: 80-");
    }

    #[test]
    fn bad_protocols_and_addresses_get_dockers_words() {
        assert_eq!(e("80/icmp"), "invalid proto: icmp");
        assert_eq!(
            e("80/sctp"),
            "proto sctp is not supported: publish tcp or udp"
        );
        assert_eq!(e("1.2.3:80:80"), "invalid IP address: 1.2.3");
        assert_eq!(e("[::1:80:80"), "invalid IP address: [::1");
        assert_eq!(e("1:2:3:4"), "invalid IP address: 1:2");
        assert_eq!(e("localhost:80:80"), "invalid IP address: localhost");
    }

    #[test]
    fn ranges_of_different_lengths_are_refused() {
        assert_eq!(
            e("8080-8082:80-81"),
            "invalid ranges specified for container and host Ports: 80-81 and 8080-8082"
        );
        assert_eq!(
            e("8080:80-81"),
            "invalid ranges specified for container and host Ports: 80-81 and 8080"
        );
        assert_eq!(
            e("8000-8010:80"),
            "host port range 8000-8010 for the single box port 80 is not supported: \
             give one host port, or a box port range of the same length"
        );
    }

    #[test]
    fn mappings_serialize_as_the_record_keeps_them() {
        let v = serde_json::to_value(m(Some("127.0.0.1"), 8080, 80, Udp)).unwrap();
        assert_eq!(
            v,
            json!({"host_ip": "127.0.0.1", "host_port": 8080, "box_port": 80, "proto": "udp"})
        );
        let back: PortMapping = serde_json::from_value(
            json!({"host_ip": null, "host_port": 0, "box_port": 80, "proto": "tcp"}),
        )
        .unwrap();
        assert_eq!(back, m(None, 0, 80, Tcp));
    }

    #[test]
    fn exposed_ports_publish_on_ports_the_host_picks() {
        let maps = exposed_to_publish(&["80/tcp".into(), "53/udp".into()]).unwrap();
        assert_eq!(maps, [m(None, 0, 80, Tcp), m(None, 0, 53, Udp)]);
        assert_eq!(
            exposed_to_publish(&["8080:80/tcp".into()])
                .unwrap_err()
                .to_string(),
            "invalid exposed port: 8080:80/tcp"
        );
        assert_eq!(
            exposed_to_publish(&["80/icmp".into()])
                .unwrap_err()
                .to_string(),
            "invalid proto: icmp"
        );
    }

    #[test]
    fn picked_host_ports_are_distinct_and_free() {
        let mut maps = p("127.0.0.1::80-82");
        maps.extend(p("127.0.0.1::53/udp"));
        maps.push(m(Some("127.0.0.1"), 0, 90, Tcp));
        assign_host_ports(&mut maps).unwrap();
        let mut tcp: Vec<u16> = maps
            .iter()
            .filter(|m| m.proto == Tcp)
            .map(|m| m.host_port)
            .collect();
        tcp.sort_unstable();
        tcp.dedup();
        assert_eq!(tcp.len(), 4);
        assert!(maps.iter().all(|m| m.host_port != 0));
        check_free(&maps).unwrap();
    }

    #[test]
    fn a_taken_port_is_already_allocated() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let taken = p(&format!("127.0.0.1:{port}:80"));
        assert_eq!(
            check_free(&taken).unwrap_err().to_string(),
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let taken = p(&format!("127.0.0.1:{port}:53/udp"));
        assert_eq!(
            check_free(&taken).unwrap_err(),
            PortError::Allocated(SocketAddr::from(([127, 0, 0, 1], port)))
        );
    }

    #[test]
    fn a_port_published_twice_is_refused() {
        let mut one = p("127.0.0.1::80");
        assign_host_ports(&mut one).unwrap();
        let port = one[0].host_port;
        let same = [one[0].clone(), m(Some("127.0.0.1"), port, 81, Tcp)];
        assert_eq!(
            check_free(&same).unwrap_err().to_string(),
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
        let everywhere = [m(None, port, 80, Tcp), one[0].clone()];
        assert!(matches!(
            check_free(&everywhere),
            Err(PortError::Allocated(_))
        ));
        // TCP and UDP ports are apart.
        check_free(&[one[0].clone(), m(Some("127.0.0.1"), port, 80, Udp)]).unwrap();
    }

    #[test]
    fn bind_failures_say_why() {
        let low = SocketAddr::from(([0, 0, 0, 0], 80));
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            bind_error(low, &denied).to_string(),
            "cannot bind 0.0.0.0:80: host ports below 1024 need privileges; \
             publish on a higher host port (-p 8080:80)"
        );
        let far = SocketAddr::from(([192, 0, 2, 7], 8080));
        let absent = io::Error::from(io::ErrorKind::AddrNotAvailable);
        assert_eq!(
            bind_error(far, &absent).to_string(),
            "cannot bind 192.0.2.7:8080: the address is not one of this host's"
        );
        let v6 = "[::1]:8080".parse().unwrap();
        let in_use = io::Error::from(io::ErrorKind::AddrInUse);
        assert_eq!(
            bind_error(v6, &in_use).to_string(),
            "Bind for [::1]:8080 failed: port is already allocated"
        );
    }

    #[test]
    fn passt_is_told_each_port() {
        let maps = [
            m(None, 8080, 80, Tcp),
            m(Some("127.0.0.1"), 5353, 53, Udp),
            m(Some("::1"), 8443, 443, Tcp),
        ];
        assert_eq!(
            passt_args(&maps),
            [
                "-t",
                "8080:80",
                "-u",
                "127.0.0.1/5353:53",
                "-t",
                "::1/8443:443"
            ]
        );
        assert!(passt_args(&[]).is_empty());
    }

    #[test]
    fn ps_folds_same_port_ranges_as_docker() {
        let mut maps = p("80-82:80-82");
        maps.extend(p("127.0.0.1:53:53/udp"));
        maps.extend(p("[::1]:90:90"));
        assert_eq!(
            ps_ports(&maps),
            "127.0.0.1:53->53/udp, 0.0.0.0:80-82->80-82/tcp, [::1]:90->90/tcp"
        );
        assert_eq!(ps_ports(&[]), "");
    }

    #[test]
    fn ps_lists_moved_ports_one_by_one_after_the_groups() {
        let mut maps = p("8080-8081:80-81");
        maps.extend(p("127.0.0.1:9000:90/udp"));
        maps.extend(p("[::1]:7000:70"));
        maps.extend(p("443:443"));
        assert_eq!(
            ps_ports(&maps),
            "0.0.0.0:443->443/tcp, [::1]:7000->70/tcp, 0.0.0.0:8080->80/tcp, \
             0.0.0.0:8081->81/tcp, 127.0.0.1:9000->90/udp"
        );
    }

    #[test]
    fn ps_breaks_a_group_at_a_gap_as_docker() {
        let mut maps = p("80:80");
        maps.extend(p("82-83:82-83"));
        maps.extend(p("81:81/udp"));
        // Docker emits a broken group at once and open ones at the end.
        assert_eq!(
            ps_ports(&maps),
            "0.0.0.0:80->80/tcp, 0.0.0.0:82-83->82-83/tcp, 0.0.0.0:81->81/udp"
        );
    }

    #[test]
    fn inspect_shapes_are_dockers() {
        let maps = [
            m(None, 8080, 80, Tcp),
            m(Some("127.0.0.1"), 8081, 80, Tcp),
            m(Some("::1"), 5353, 53, Udp),
        ];
        assert_eq!(
            inspect_ports(&maps),
            json!({
                "53/udp": [{"HostIp": "::1", "HostPort": "5353"}],
                "80/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "8080"},
                    {"HostIp": "127.0.0.1", "HostPort": "8081"},
                ],
            })
        );
        assert_eq!(
            inspect_port_bindings(&maps[..1]),
            json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})
        );
        assert_eq!(inspect_ports(&[]), json!({}));
    }
}
