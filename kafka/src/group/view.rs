//! What DescribeGroups and ListGroups show.

use bytes::Bytes;

use super::state::{GroupId, GroupState, InstanceId, MemberId};
use super::Coordinator;

/// A member in DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The member.
    pub member_id: MemberId,
    /// Its instance id, if static.
    pub group_instance_id: Option<InstanceId>,
    /// Its client id.
    pub client_id: String,
    /// Its address.
    pub client_host: String,
    /// Its metadata for the selected protocol (empty unless Stable).
    pub metadata: Bytes,
    /// Its assignment (empty unless Stable).
    pub assignment: Bytes,
}

/// A group in DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// The group.
    pub group_id: GroupId,
    /// The state, typed.
    pub state: GroupState,
    /// The state as Kafka spells it ("Dead" for an unknown group, which
    /// DescribeGroups v6+ answers with GROUP_ID_NOT_FOUND instead).
    pub state_name: &'static str,
    /// The protocol type, "" if none.
    pub protocol_type: String,
    /// The selected protocol; "" unless Stable, as in Kafka.
    pub protocol: String,
    /// The members, in order of arrival.
    pub members: Vec<MemberView>,
}

/// A group in ListGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group.
    pub group_id: GroupId,
    /// The protocol type, "" if none.
    pub protocol_type: String,
    /// The state (ListGroups v4+ carries its name and filters on it).
    pub state: GroupState,
}

impl Coordinator {
    /// DescribeGroups for one group. Metadata and assignments are shown
    /// only in Stable, as Kafka does: in other states they are stale or
    /// incomplete.
    pub fn describe(&self, group_id: &GroupId) -> GroupView {
        let Some(g) = self.groups.get(group_id) else {
            return GroupView {
                group_id: group_id.clone(),
                state: GroupState::Dead,
                state_name: GroupState::Dead.as_str(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let stable = g.state == GroupState::Stable;
        let members = g
            .members_in_order()
            .into_iter()
            .map(|m| MemberView {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata_for(g.protocol.as_deref())
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupView {
            group_id: g.id.clone(),
            state: g.state,
            state_name: g.state.as_str(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                g.protocol.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members,
        }
    }

    /// ListGroups: every group, by id; with `states` non-empty only those
    /// in one of them (ListGroups v4 `states_filter`, matched on Kafka's
    /// names, case-insensitively as Kafka does).
    pub fn list(&self, states: &[String]) -> Vec<ListedGroup> {
        self.groups
            .values()
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.as_str()))
            })
            .map(|g| ListedGroup {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }
}
