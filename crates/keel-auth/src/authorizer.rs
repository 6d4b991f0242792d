//! The ACL set and the authorization decision, with the semantics of Kafka's
//! `StandardAuthorizer` (`StandardAuthorizerData.authorize`).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use crate::acl::{WILDCARD_HOST, WILDCARD_RESOURCE};
use std::net::IpAddr;

use crate::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, KafkaPrincipal, PatternType, PrincipalError,
    ResourceType,
};

/// The principal string that, in an ACL, matches every principal.
const WILDCARD_PRINCIPAL: &str = "User:*";

/// The access control entry of a binding: who, from where, what, allow or deny.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct AclEntry {
    principal: String,
    host: String,
    operation: AclOperation,
    permission: AclPermissionType,
}

/// The entries of one pattern type for one resource type, by resource name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PatternIndex {
    by_name: BTreeMap<String, BTreeSet<AclEntry>>,
    /// How many names of each byte length `by_name` holds. A PREFIXED lookup probes only the
    /// prefixes of the resource name that have a length some pattern has.
    name_lengths: BTreeMap<usize, usize>,
}

impl PatternIndex {
    fn insert(&mut self, name: &str, entry: AclEntry) -> bool {
        let entries = self.by_name.entry(name.to_owned()).or_insert_with(|| {
            *self.name_lengths.entry(name.len()).or_default() += 1;
            BTreeSet::new()
        });
        entries.insert(entry)
    }

    fn remove(&mut self, name: &str, entry: &AclEntry) -> bool {
        let Some(entries) = self.by_name.get_mut(name) else {
            return false;
        };
        let removed = entries.remove(entry);
        if entries.is_empty() {
            self.by_name.remove(name);
            let count = self.name_lengths.get_mut(&name.len()).expect("every stored name's length is counted");
            *count -= 1;
            if *count == 0 {
                self.name_lengths.remove(&name.len());
            }
        }
        removed
    }

    fn get(&self, name: &str) -> Option<&BTreeSet<AclEntry>> {
        self.by_name.get(name)
    }

    /// The entries of every pattern that is a prefix of `name` (including `name` itself).
    fn prefixes_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a BTreeSet<AclEntry>> + 'a {
        self.name_lengths
            .range(..=name.len())
            .filter(move |(length, _)| name.is_char_boundary(**length))
            .filter_map(move |(length, _)| self.by_name.get(&name[..*length]))
    }
}

/// Every ACL in the cluster, indexed for [`Authorizer::authorize`].
///
/// ACLs are grouped by resource type, then by pattern type, then by resource name in a
/// `BTreeMap`. Authorizing an action on `(type, name)` reads only the ACLs that can apply:
/// the LITERAL entries for `name` and for `*` (two map lookups), and the PREFIXED entries for
/// each prefix of `name` whose length some PREFIXED pattern of that type has (one lookup per
/// distinct pattern length, usually a handful). Thousands of ACLs on other resources cost
/// nothing but the logarithm of the map size. Iteration order is deterministic (sorted), so
/// DescribeAcls answers and snapshots are stable.
///
/// Like Kafka's, the set holds each binding once: adding one that is already there changes
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclSet {
    patterns: BTreeMap<(ResourceType, PatternType), PatternIndex>,
    len: usize,
}

impl AclSet {
    pub fn new() -> AclSet {
        AclSet::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a binding; returns whether it was new. The binding must have passed
    /// [`AclBinding::validate`]: a pattern type other than LITERAL or PREFIXED is a bug.
    pub fn insert(&mut self, binding: &AclBinding) -> bool {
        assert!(
            matches!(binding.pattern_type, PatternType::Literal | PatternType::Prefixed),
            "only LITERAL and PREFIXED bindings are stored: {binding}"
        );
        let index = self.patterns.entry((binding.resource_type, binding.pattern_type)).or_default();
        let added = index.insert(&binding.resource_name, entry_of(binding));
        if added {
            self.len += 1;
        }
        added
    }

    /// Removes a binding; returns whether it was there.
    pub fn remove(&mut self, binding: &AclBinding) -> bool {
        let key = (binding.resource_type, binding.pattern_type);
        let Some(index) = self.patterns.get_mut(&key) else {
            return false;
        };
        let removed = index.remove(&binding.resource_name, &entry_of(binding));
        if index.by_name.is_empty() {
            self.patterns.remove(&key);
        }
        if removed {
            assert!(self.len > 0, "the count covers every stored binding");
            self.len -= 1;
        }
        removed
    }

    /// Every binding, sorted by resource type, pattern type, name, then entry.
    pub fn iter(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.patterns.iter().flat_map(|(&(resource_type, pattern_type), index)| {
            index.by_name.iter().flat_map(move |(name, entries)| {
                entries.iter().map(move |entry| AclBinding {
                    resource_type,
                    resource_name: name.clone(),
                    pattern_type,
                    principal: entry.principal.clone(),
                    host: entry.host.clone(),
                    operation: entry.operation,
                    permission: entry.permission,
                })
            })
        })
    }

    /// The bindings a DescribeAcls or DeleteAcls filter selects, in [`AclSet::iter`] order.
    /// This scans every binding, as Kafka does; those requests are rare and admin-only.
    pub fn matching(&self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        self.iter().filter(|binding| filter.matches(binding)).collect()
    }

    /// Every entry whose pattern applies to the resource `(resource_type, name)`: LITERAL
    /// `name`, LITERAL `*`, and PREFIXED patterns that start `name`.
    fn entries_for<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclEntry> + 'a {
        let literal = self.patterns.get(&(resource_type, PatternType::Literal));
        let prefixed = self.patterns.get(&(resource_type, PatternType::Prefixed));
        let exact = literal.and_then(|index| index.get(name));
        // When the resource is itself named "*", the two LITERAL lookups are the same set.
        let wildcard = literal.and_then(|index| index.get(WILDCARD_RESOURCE)).filter(|_| name != WILDCARD_RESOURCE);
        let prefixes = prefixed.into_iter().flat_map(move |index| index.prefixes_of(name));
        exact.into_iter().chain(wildcard).chain(prefixes).flatten()
    }
}

fn entry_of(binding: &AclBinding) -> AclEntry {
    AclEntry {
        principal: binding.principal.clone(),
        host: binding.host.clone(),
        operation: binding.operation,
        permission: binding.permission,
    }
}

/// What one ACL entry says about an action, given that its resource pattern applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryVerdict {
    /// The entry is for another principal, host or operation.
    NotApplicable,
    Allow,
    Deny,
}

/// Kafka's `StandardAuthorizerData.findResult`: the entry applies when its principal is the
/// principal or `User:*`, its host is the host or `*`, and its operation is the operation or
/// ALL; an ALLOW entry for READ, WRITE, DELETE or ALTER also allows DESCRIBE, and one for
/// ALTER_CONFIGS also allows DESCRIBE_CONFIGS. A DENY entry denies only its own operation (or
/// everything, for ALL): denying READ does not deny DESCRIBE.
fn entry_verdict(entry: &AclEntry, principal: &str, host: &str, operation: AclOperation) -> EntryVerdict {
    if entry.principal != principal && entry.principal != WILDCARD_PRINCIPAL {
        return EntryVerdict::NotApplicable;
    }
    if entry.host != host && entry.host != WILDCARD_HOST {
        return EntryVerdict::NotApplicable;
    }
    let allow = entry.permission == AclPermissionType::Allow;
    let operation_applies = entry.operation == AclOperation::All
        || entry.operation == operation
        || (allow && implies(entry.operation, operation));
    if !operation_applies {
        return EntryVerdict::NotApplicable;
    }
    match entry.permission {
        AclPermissionType::Allow => EntryVerdict::Allow,
        AclPermissionType::Deny => EntryVerdict::Deny,
        // Validation keeps these out of the set; an entry that somehow has one decides nothing.
        AclPermissionType::Unknown | AclPermissionType::Any => EntryVerdict::NotApplicable,
    }
}

/// Whether an ALLOW for `granted` also allows `requested` (other than by being equal).
fn implies(granted: AclOperation, requested: AclOperation) -> bool {
    use AclOperation::{Alter, AlterConfigs, Delete, Describe, DescribeConfigs, Read, Write};
    match requested {
        Describe => matches!(granted, Read | Write | Delete | Alter),
        DescribeConfigs => granted == AlterConfigs,
        _ => false,
    }
}

/// The authorization decision: the cluster's ACLs and the broker's static configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizer {
    pub acls: AclSet,
    /// Kafka's `super.users`: principals allowed everything, whatever the ACLs say.
    pub super_users: Vec<KafkaPrincipal>,
    /// Kafka's `allow.everyone.if.no.acl.found`: the answer for a resource no ACL applies to.
    pub allow_everyone_if_no_acl_found: bool,
}

impl Authorizer {
    pub fn new(super_users: Vec<KafkaPrincipal>, allow_everyone_if_no_acl_found: bool) -> Authorizer {
        Authorizer { acls: AclSet::new(), super_users, allow_everyone_if_no_acl_found }
    }

    /// Parses Kafka's `super.users` setting: principals separated by `;`, blanks around them
    /// and empty entries ignored (`"User:admin; User:broker"`).
    pub fn parse_super_users(setting: &str) -> Result<Vec<KafkaPrincipal>, PrincipalError> {
        setting.split(';').map(str::trim).filter(|entry| !entry.is_empty()).map(KafkaPrincipal::parse).collect()
    }

    /// Whether `principal`, connected from `host` (the client's IP address as text), may
    /// perform `operation` on the resource `(resource_type, resource_name)`. As Kafka's
    /// StandardAuthorizer, in order:
    ///
    /// 1. A super user is allowed.
    /// 2. Among the ACLs whose pattern applies to the resource (LITERAL with the name, LITERAL
    ///    `*`, PREFIXED with a prefix of the name), one that applies to the principal, host and
    ///    operation with DENY denies, whatever else matches.
    /// 3. Else one that applies with ALLOW allows.
    /// 4. Else, if no ACL's pattern applies to the resource at all, whatever its principal,
    ///    host or operation, the answer is `allow_everyone_if_no_acl_found`.
    /// 5. Else the action is denied: the resource has ACLs, none for this.
    pub fn authorize(
        &self,
        principal: &KafkaPrincipal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> bool {
        if self.super_users.contains(principal) {
            return true;
        }
        let principal = principal.to_string();
        let mut resource_has_acls = false;
        let mut allowed = false;
        for entry in self.acls.entries_for(resource_type, resource_name) {
            resource_has_acls = true;
            match entry_verdict(entry, &principal, host, operation) {
                EntryVerdict::Deny => return false,
                EntryVerdict::Allow => allowed = true,
                EntryVerdict::NotApplicable => {}
            }
        }
        if allowed {
            return true;
        }
        !resource_has_acls && self.allow_everyone_if_no_acl_found
    }
}

/// The client's address as Kafka writes it for ACL host matching (Java's
/// `InetAddress.getHostAddress`), so that hosts in ACLs created for Kafka match the same
/// clients in keel: IPv4 dotted; IPv6 as eight lowercase hex groups without leading zeros and
/// without `::` compression (`0:0:0:0:0:0:0:1`, where Rust prints `::1`); an IPv4-mapped IPv6
/// address as its IPv4 form, since Java turns those into IPv4 addresses.
pub fn acl_host(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.segments().map(|segment| format!("{segment:x}")).join(":"),
        },
    }
}

#[cfg(test)]
mod tests;
