//! `longshot`: the command-line tool (filled by the cluster issue).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("longshot: the cluster commands arrive with the cluster issue")
}
