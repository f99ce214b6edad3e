//! `meshlens ca ...`: the mesh root CA and workload certificates for the bundled proxy.

use clap::Subcommand;
use meshlens_model::SpiffeId;
use meshlens_model::mesh::Duration;
use meshlens_proxy::ca;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a mesh root CA: DIR/ca.crt and DIR/ca.key (readable by the owner only).
    Init(InitArgs),
    /// Issue a workload certificate whose only subject alternative name is a SPIFFE ID; writes
    /// cert-chain.pem, key.pem and root-cert.pem (the files a proxy's --cert/--key/--root read).
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory for ca.crt and ca.key.
    #[arg(long, value_name = "DIR", env = "MESHLENS_CA_DIR", default_value = "meshlens-ca")]
    ca_dir: PathBuf,
    /// Replace an existing root (every certificate it issued stops verifying).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The workload identity, e.g. spiffe://cluster.local/ns/default/sa/reviews.
    #[arg(long, value_name = "ID")]
    spiffe: SpiffeId,
    /// Directory holding the CA (from `meshlens ca init`).
    #[arg(long, value_name = "DIR", env = "MESHLENS_CA_DIR", default_value = "meshlens-ca")]
    ca_dir: PathBuf,
    /// Where to write cert-chain.pem, key.pem and root-cert.pem.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Certificate lifetime (Istio's default is 24h).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    validity: Duration,
}

impl CaCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            CaCommand::Init(args) => {
                let cert = ca::init(&args.ca_dir, args.force)?;
                println!("{}", cert.display());
            }
            CaCommand::Issue(args) => {
                let issued = ca::issue(&args.ca_dir, &args.spiffe, args.validity.as_std())?;
                ca::write_issued(&args.out, &issued)?;
                for name in [ca::CERT_CHAIN, ca::KEY, ca::ROOT_CERT] {
                    println!("{}", args.out.join(name).display());
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
