//! The node-local listen address (upstream: NodeLocal DNSCache's `nodelocaldns` dummy
//! interface): a dummy link of kube-proxy's own holding the cluster DNS address as a
//! host address, so packets to that address are delivered to this node's listener
//! instead of being routed on; made over rtnetlink, removed by `--cleanup`. A kernel
//! built without the dummy driver (no modules to load) gets a bridge with no ports
//! instead: its addresses are local all the same.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec};

/// The link's name.
pub const LINK_NAME: &str = "pikube-dns";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("adding link {LINK_NAME}: {0}")]
    AddLink(#[source] rtnetlink::Error),
    #[error("setting link {LINK_NAME} up: {0}")]
    SetUp(#[source] rtnetlink::Error),
    #[error("listing addresses of {LINK_NAME}: {0}")]
    ListAddresses(#[source] rtnetlink::Error),
    #[error("adding {ip} to {LINK_NAME}: {source}")]
    AddAddress {
        ip: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("deleting link {LINK_NAME}: {0}")]
    Delete(#[source] rtnetlink::Error),
    #[error("link {LINK_NAME} did not appear after it was added")]
    Missing,
}

fn connect() -> Result<Handle, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The index of link `name`, None when there is none.
async fn link_index(handle: &Handle, name: &str) -> Option<u32> {
    // A missing link is an ENODEV error, not an empty answer.
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(link)) => Some(link.header.index),
        _ => None,
    }
}

/// Makes sure the dummy link exists, is up and holds `ip` (as a /32 or /128).
pub async fn ensure(ip: IpAddr) -> Result<(), Error> {
    let handle = connect()?;
    let index = match link_index(&handle, LINK_NAME).await {
        Some(i) => i,
        None => {
            let dummy = handle
                .link()
                .add(LinkDummy::new(LINK_NAME).build())
                .execute()
                .await;
            if let Err(e) = dummy {
                tracing::info!(error = %e, "no dummy links here: using a bridge without ports");
                handle
                    .link()
                    .add(LinkBridge::new(LINK_NAME).build())
                    .execute()
                    .await
                    .map_err(Error::AddLink)?;
            }
            link_index(&handle, LINK_NAME).await.ok_or(Error::Missing)?
        }
    };
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(Error::SetUp)?;
    let present = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(ip)
        .execute()
        .try_next()
        .await
        .map_err(Error::ListAddresses)?
        .is_some();
    if !present {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        handle
            .address()
            .add(index, ip, prefix)
            .execute()
            .await
            .map_err(|source| Error::AddAddress { ip, source })?;
    }
    Ok(())
}

/// Removes the link (and so its address), if it exists.
pub async fn remove() -> Result<(), Error> {
    let handle = connect()?;
    if let Some(index) = link_index(&handle, LINK_NAME).await {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(Error::Delete)?;
    }
    Ok(())
}
