//! # evac-libvirt
//!
//! The libvirt backend of evac (work in progress): see [`client`] for the
//! calls and [`lab`] for the multi-host test lab.

pub mod client;
pub mod inventory;
pub mod lab;
mod raw;
mod xml;
