//! Network faults mid-job, with real processes: a worker runs in its own network namespace joined
//! to the host by a veth pair (made by the test, which needs root).
//! - The link goes down: the worker is cut off; its job resumes from the last checkpoint on the
//!   two workers left.
//! - A partition between two workers that both still reach the coordinator (each in its own
//!   namespace, joined to each other by a third veth pair whose routes turn into blackholes): their
//!   exchange breaks, the job is interrupted and resumes on both once the routes are back.
//!
//! Each time the output is exactly the bits of the same job undisturbed.

mod harness;

use harness::{fetch_render, submit, Cluster, ClusterOptions, FAULT_JOB, FAULT_JOB_LATENTS};
use std::process::Command;
use std::time::{Duration, Instant};

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace linked to the host by a veth pair: host side `10.231.<n>.1`, namespace
/// side `10.231.<n>.2`. Removed on drop (which removes the pair too).
struct Netns {
    name: String,
    host_if: String,
    n: u32,
}

impl Netns {
    /// `which`: tells apart the namespaces of tests running at once.
    fn create(which: u32) -> Netns {
        let n = (std::process::id() * 2 + which) % 250 + 1;
        let ns = Netns {
            name: format!("longshot-test-{n}"),
            host_if: format!("lsh{n}"),
            n,
        };
        let peer = format!("lsn{n}");
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        ip(&["netns", "add", &ns.name]);
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{}/24", ns.host_ip()), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/24", ns.ns_ip()), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // The host's other addresses (another namespace's coordinator address) through the pair.
        inside(&["route", "add", "default", "via", &ns.host_ip()]);
        ns
    }

    /// `ip ARGS` inside the namespace.
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn host_ip(&self) -> String {
        format!("10.231.{}.1", self.n)
    }

    fn ns_ip(&self) -> String {
        format!("10.231.{}.2", self.n)
    }

    /// Takes the link down (or up again).
    fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

/// Two namespaces joined directly by a veth pair (`d<n>a` in `a`, `d<n>b` in `b`): each reaches
/// the other's address through it, and the host (the coordinator) through its own pair.
struct Linked {
    a: Netns,
    b: Netns,
}

impl Linked {
    fn create() -> Linked {
        let (a, b) = (Netns::create(1), Netns::create(2));
        let (da, db) = (format!("d{}a", a.n), format!("d{}b", a.n));
        ip(&[
            "link", "add", &da, "netns", &a.name, "type", "veth", "peer", "name", &db, "netns", &b.name,
        ]);
        a.ip(&["link", "set", &da, "up"]);
        b.ip(&["link", "set", &db, "up"]);
        let linked = Linked { a, b };
        linked.connect(true);
        linked
    }

    /// Routes each namespace's traffic to the other over their pair, or into a blackhole.
    fn connect(&self, up: bool) {
        let (da, db) = (format!("d{}a", self.a.n), format!("d{}b", self.a.n));
        for (ns, dev, to) in [(&self.a, &da, self.b.ns_ip()), (&self.b, &db, self.a.ns_ip())] {
            let to = format!("{to}/32");
            if up {
                ns.ip(&["route", "replace", &to, "dev", dev]);
            } else {
                ns.ip(&["route", "replace", "blackhole", &to]);
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}

#[test]
fn a_worker_cut_off_the_network_is_left_behind_and_the_job_resumes_bit_identically() {
    let ns = Netns::create(0);
    let options = ClusterOptions {
        coordinator_args: vec!["--checkpoint-every".into(), "10".into()],
        host: Some(ns.host_ip()),
        ..Default::default()
    };
    let mut c = Cluster::start_with(0, 30.0, options);
    let exec = ["ip", "netns", "exec", ns.name.as_str()];
    c.add_worker_in(&[], &ns.host_ip());
    c.add_worker_in(&exec, &ns.ns_ip());
    c.add_worker_in(&[], &ns.host_ip());
    c.wait_for_workers(3);

    let t = Instant::now();
    let reference = submit(&c, FAULT_JOB);
    let s = c.wait_state(&reference, TERMINAL, Duration::from_secs(300));
    assert_eq!(
        (s["state"].as_str(), s["plan"]["workers"].as_u64()),
        (Some("done"), Some(3)),
        "{s}\n{}",
        c.logs()
    );
    let undisturbed = t.elapsed();
    let want = fetch_render(&c, &reference, "reference", FAULT_JOB_LATENTS);

    let t = Instant::now();
    let job = submit(&c, FAULT_JOB);
    c.wait_steps(&job, c.status(&job)["steps_total"].as_u64().unwrap() * 2 / 5);
    ns.set_link(false);
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(300));
    let disturbed = t.elapsed();
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    let r = &s["recovery"];
    assert!(
        r["resumes"].as_u64().unwrap() >= 1 && r["last_interruption"].as_str().unwrap_or("").contains("w1"),
        "the cut worker must be named: {s}"
    );
    assert_eq!(s["plan"]["workers"], 2, "{s}");
    let got = fetch_render(&c, &job, "disturbed", FAULT_JOB_LATENTS);
    assert!(got.0 == want.0, "latents differ from the undisturbed job");
    assert!(got.1 == want.1, "frames differ from the undisturbed job");
    println!(
        "network cut of w1 at 40%: {:.1} s vs {:.1} s undisturbed (+{:.1} s)",
        disturbed.as_secs_f64(),
        undisturbed.as_secs_f64(),
        disturbed.as_secs_f64() - undisturbed.as_secs_f64()
    );
    // The link back, the worker registers again.
    ns.set_link(true);
    c.wait_for_workers(3);
}

#[test]
fn a_partition_between_two_workers_interrupts_the_job_and_it_resumes_when_healed() {
    let net = Linked::create();
    let options = ClusterOptions {
        coordinator_args: vec!["--checkpoint-every".into(), "10".into()],
        host: Some(net.a.host_ip()),
        ..Default::default()
    };
    // A 3 s exchange timeout: the partition below (4 s) outlasts it.
    let mut c = Cluster::start_with(0, 3.0, options);
    for ns in [&net.a, &net.b] {
        c.add_worker_in(&["ip", "netns", "exec", ns.name.as_str()], &ns.ns_ip());
    }
    c.wait_for_workers(2);

    let t = Instant::now();
    let reference = submit(&c, FAULT_JOB);
    let s = c.wait_state(&reference, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    let undisturbed = t.elapsed();
    let want = fetch_render(&c, &reference, "reference", FAULT_JOB_LATENTS);

    let t = Instant::now();
    let job = submit(&c, FAULT_JOB);
    c.wait_steps(&job, c.status(&job)["steps_total"].as_u64().unwrap() * 2 / 5);
    net.connect(false);
    std::thread::sleep(Duration::from_secs(4));
    net.connect(true);
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(300));
    let disturbed = t.elapsed();
    assert_eq!(
        s["state"],
        "done",
        "a partition between workers must not fail the job: {s}\n{}",
        c.logs()
    );
    let r = &s["recovery"];
    assert!(
        r["resumes"].as_u64().unwrap() >= 1 && r["last_interruption"].as_str().unwrap_or("").contains("neighbour"),
        "the broken exchange must be named: {s}"
    );
    assert_eq!(
        r["excluded_workers"].as_array().map(Vec::len),
        Some(0),
        "nobody is to blame: {s}"
    );
    assert_eq!(s["plan"]["workers"], 2, "{s}");
    let got = fetch_render(&c, &job, "disturbed", FAULT_JOB_LATENTS);
    assert!(got.0 == want.0, "latents differ from the undisturbed job");
    assert!(got.1 == want.1, "frames differ from the undisturbed job");
    println!(
        "4 s partition between w0 and w1 at 40%: {:.1} s vs {:.1} s undisturbed (+{:.1} s, {} resumes, last: {})",
        disturbed.as_secs_f64(),
        undisturbed.as_secs_f64(),
        disturbed.as_secs_f64() - undisturbed.as_secs_f64(),
        r["resumes"],
        r["last_interruption"]
    );
}
