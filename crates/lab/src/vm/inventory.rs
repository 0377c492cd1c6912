//! The inventories that point evac at a lab's VMs: on loopback or across
//! the lab's network namespaces, as text, as a file or parsed. Apart from
//! starting the VMs (`super`): a test reads these to see what evac is told.

use std::path::{Path, PathBuf};

use evac_qemu::Inventory;

use super::{destination_args, Lab, LabVm};
use crate::pair::LabNetwork;

impl Lab {
    /// [`Lab::inventory`], parsed.
    pub fn parsed_inventory(&self, policy: &str, vms: &[LabVm], extra_migration: &str) -> Inventory {
        let text = self.inventory(policy, vms, extra_migration);
        Inventory::from_str_at(&text, Path::new("lab.toml")).expect("the lab writes valid inventories")
    }

    /// [`Lab::inventory`], written to `inventory.toml` in the lab's
    /// directory: its path, for a command line.
    pub fn inventory_file(&self, policy: &str, vms: &[LabVm], extra_migration: &str) -> PathBuf {
        let path = self.dir.join("inventory.toml");
        std::fs::write(&path, self.inventory(policy, vms, extra_migration))
            .expect("the lab's directory is writable");
        path
    }

    /// An inventory for `vms` on one source host `src` and one destination
    /// `dst` on loopback.
    pub fn inventory(&self, policy: &str, vms: &[LabVm], extra_migration: &str) -> String {
        self.inventory_with_hosts(
            policy,
            vms,
            extra_migration,
            "[[host]]\nname = \"src\"\nsite = \"source\"\nnic = \"1 Gbps\"\n\
             [[host]]\nname = \"dst\"\nsite = \"destination\"\nnic = \"1 Gbps\"\n\
             migration_address = \"127.0.0.1\"\n",
        )
    }

    /// An inventory for `vms` on host `src` = the namespace `net.src` and a
    /// destination `dst` = `net.dst`, whose QEMUs are started there by
    /// `ip netns exec` and listen on its veth address.
    pub fn inventory_in(
        &self,
        net: &LabNetwork,
        policy: &str,
        vms: &[LabVm],
        extra_migration: &str,
    ) -> String {
        let hosts = format!(
            r#"[[host]]
name = "src"
site = "source"
nic = "1 Gbps"
netns = "{src}"
[[host]]
name = "dst"
site = "destination"
nic = "1 Gbps"
netns = "{dst}"
migration_address = "{address}"
incoming_command = "ip netns exec {{netns}} qemu-system-x86_64"
"#,
            src = net.src,
            dst = net.dst,
            address = LabNetwork::DST_ADDRESS,
        );
        self.inventory_with_hosts(policy, vms, extra_migration, &hosts)
    }

    fn inventory_with_hosts(
        &self,
        policy: &str,
        vms: &[LabVm],
        extra_migration: &str,
        hosts: &str,
    ) -> String {
        let mut text = format!(
            r#"name = "lab"
run_dir = "{dir}"
[controller]
policy = "{policy}"
period = "500 ms"
[migration]
downtime_limit = "300 ms"
{extra_migration}
{hosts}"#,
            dir = self.dir.display()
        );
        for vm in vms {
            let args: Vec<String> = destination_args(vm.mib)
                .iter()
                .map(|a| format!("{a:?}"))
                .collect();
            text += &format!(
                "[[vm]]\nname = \"{}\"\nhost = \"src\"\nqmp = \"{}\"\nqemu_args = [{}]\n",
                vm.name,
                vm.qmp.display(),
                args.join(", ")
            );
        }
        text
    }
}
