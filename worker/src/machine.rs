//! What a worker tells the cluster about the machine it runs on: its default id from the
//! hostname, and the compute device's name and memory (the CPU's from `/proc` without a GPU).

use crate::device::Device;

/// `hostname-pid`, unique while the process lives.
pub fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string());
    let host = host.unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// The name the coordinator gangs by. The CPU still runs the text encoder and VAE on a CUDA
/// worker, so it is part of the name there too.
pub fn device_name(device: &Device) -> String {
    device
        .describe()
        .map_or_else(cpu_name, |(n, _)| format!("{n} with {}", cpu_name()))
}

/// The device's memory: the GPU's, else the machine's.
pub fn memory_bytes(device: &Device) -> u64 {
    device.describe().map_or_else(machine_memory_bytes, |(_, m)| m)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("model name"));
            line.and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Memory in use on the device: the GPU's (every process's), else this process's resident set.
/// `None` when it cannot be read (a driver error, or no /proc).
pub fn memory_in_use(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => proc_kib("/proc/self/status", "VmRSS:"),
        #[cfg(feature = "cuda")]
        Device::Cuda(b) => b.memory_in_use().ok(),
    }
}

fn machine_memory_bytes() -> u64 {
    proc_kib("/proc/meminfo", "MemTotal:").unwrap_or(0)
}

/// The `KEY   N kB` line of a /proc file, in bytes.
fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_worker_describes_its_cpu() {
        assert!(!device_name(&Device::Cpu).is_empty());
        assert!(default_id().ends_with(&format!("-{}", std::process::id())));
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(memory_bytes(&Device::Cpu) > 0);
            // This test process holds at least the 64 MiB it just touched.
            let block = vec![1u8; 64 << 20];
            let rss = memory_in_use(&Device::Cpu).expect("VmRSS in /proc/self/status");
            assert!(rss >= 64 << 20 && rss < memory_bytes(&Device::Cpu), "{rss}");
            assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
        }
    }
}
