//! Which peer a datagram is for: by the ufrag a STUN request names, else by
//! the source address (cached), else the first peer whose `Rtc` accepts it.

use std::net::SocketAddr;

use str0m::Input;

use super::{Core, PeerId};
use crate::net::rtc;

impl Core {
    /// The peer this datagram belongs to (cached by source address). A STUN
    /// request goes by the ufrag it names: str0m's `accepts` takes anything
    /// from a peer's nominated address, so a new viewer whose port was a
    /// vanished one's (its peer alive until the consent timeout) would
    /// otherwise have its checks eaten by that old peer and never connect.
    pub(super) fn route(
        &mut self,
        source: SocketAddr,
        input: &Input<'_>,
        contents: &[u8],
    ) -> Option<PeerId> {
        if let Some(&id) = rtc::stun_local_ufrag(contents).and_then(|u| self.by_ufrag.get(u)) {
            self.cache(source, id);
            return Some(id);
        }
        if let Some(&id) = self.by_addr.get(&source) {
            if self.peers.get(&id).is_some_and(|p| p.rtc.accepts(input)) {
                return Some(id);
            }
        }
        let id = self
            .peers
            .iter()
            .find(|(_, p)| p.rtc.accepts(input))
            .map(|(id, _)| *id)?;
        self.cache(source, id);
        Some(id)
    }

    /// Datagrams from `source` are `id`'s from now on.
    fn cache(&mut self, source: SocketAddr, id: PeerId) {
        if let Some(old) = self.by_addr.insert(source, id) {
            if old == id {
                return;
            }
            if let Some(p) = self.peers.get_mut(&old) {
                p.addrs.retain(|a| *a != source);
            }
        }
        if let Some(p) = self.peers.get_mut(&id) {
            p.addrs.push(source);
        }
    }
}
