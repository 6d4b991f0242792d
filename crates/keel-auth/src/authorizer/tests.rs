use super::*;
use crate::CLUSTER_NAME;

use AclOperation::*;
use AclPermissionType::{Allow, Deny};
use PatternType::{Literal, Prefixed};
use ResourceType::{Cluster, Group, Topic};

fn acl(
    resource_type: ResourceType,
    name: &str,
    pattern_type: PatternType,
    principal: &str,
    host: &str,
    operation: AclOperation,
    permission: AclPermissionType,
) -> AclBinding {
    AclBinding {
        resource_type,
        resource_name: name.to_owned(),
        pattern_type,
        principal: principal.to_owned(),
        host: host.to_owned(),
        operation,
        permission,
    }
}

/// An ACL on topic `name` for `principal` from any host.
fn topic(
    name: &str,
    pattern_type: PatternType,
    principal: &str,
    operation: AclOperation,
    permission: AclPermissionType,
) -> AclBinding {
    acl(Topic, name, pattern_type, principal, "*", operation, permission)
}

struct Case {
    name: &'static str,
    acls: Vec<AclBinding>,
    super_users: &'static [&'static str],
    allow_everyone_if_no_acl_found: bool,
    principal: &'static str,
    host: &'static str,
    operation: AclOperation,
    resource: (ResourceType, &'static str),
    allowed: bool,
}

impl Case {
    fn new(
        name: &'static str,
        acls: Vec<AclBinding>,
        principal: &'static str,
        operation: AclOperation,
        resource: (ResourceType, &'static str),
        allowed: bool,
    ) -> Case {
        Case {
            name,
            acls,
            super_users: &[],
            allow_everyone_if_no_acl_found: false,
            principal,
            host: "10.0.0.1",
            operation,
            resource,
            allowed,
        }
    }

    fn connecting_from(mut self, host: &'static str) -> Case {
        self.host = host;
        self
    }

    fn allow_everyone_if_no_acl_found(mut self) -> Case {
        self.allow_everyone_if_no_acl_found = true;
        self
    }

    fn super_users(mut self, super_users: &'static [&'static str]) -> Case {
        self.super_users = super_users;
        self
    }

    fn authorizer(&self) -> Authorizer {
        let super_users = self.super_users.iter().map(|user| KafkaPrincipal::parse(user).unwrap()).collect();
        let mut authorizer = Authorizer::new(super_users, self.allow_everyone_if_no_acl_found);
        for binding in &self.acls {
            binding.validate().unwrap();
            authorizer.acls.insert(binding);
        }
        authorizer
    }
}

fn cases() -> Vec<Case> {
    let alice = "User:alice";
    let orders = (Topic, "orders");
    vec![
        // No ACL applies to the resource: the default, both ways.
        Case::new("no acls, default deny", vec![], alice, Read, orders, false),
        Case::new("no acls, default allow", vec![], alice, Read, orders, true).allow_everyone_if_no_acl_found(),
        Case::new(
            "acls on another topic only, default allow",
            vec![topic("payments", Literal, alice, Read, Deny)],
            alice,
            Read,
            orders,
            true,
        )
        .allow_everyone_if_no_acl_found(),
        Case::new(
            "acls on the topic for someone else: the default does not apply",
            vec![topic("orders", Literal, "User:bob", Read, Allow)],
            alice,
            Read,
            orders,
            false,
        )
        .allow_everyone_if_no_acl_found(),
        Case::new(
            "acls on the topic for another operation: the default does not apply",
            vec![topic("orders", Literal, alice, Write, Allow)],
            alice,
            Read,
            orders,
            false,
        )
        .allow_everyone_if_no_acl_found(),
        Case::new(
            "a literal acl on a prefix of the name does not apply, so the default does",
            vec![topic("ord", Literal, "User:bob", Read, Allow)],
            alice,
            Read,
            orders,
            true,
        )
        .allow_everyone_if_no_acl_found(),
        Case::new(
            "acls on a group of the same name do not apply to the topic",
            vec![acl(Group, "orders", Literal, "User:bob", "*", Read, Allow)],
            alice,
            Read,
            orders,
            true,
        )
        .allow_everyone_if_no_acl_found(),
        // Literal allow.
        Case::new("literal allow", vec![topic("orders", Literal, alice, Read, Allow)], alice, Read, orders, true),
        Case::new(
            "literal allow, other principal",
            vec![topic("orders", Literal, alice, Read, Allow)],
            "User:bob",
            Read,
            orders,
            false,
        ),
        Case::new(
            "literal allow, other operation",
            vec![topic("orders", Literal, alice, Read, Allow)],
            alice,
            Write,
            orders,
            false,
        ),
        // Deny wins.
        Case::new(
            "deny beats allow",
            vec![topic("orders", Literal, alice, Read, Allow), topic("orders", Literal, alice, Read, Deny)],
            alice,
            Read,
            orders,
            false,
        ),
        Case::new(
            "a wildcard-principal deny beats a specific allow",
            vec![topic("orders", Literal, alice, Read, Allow), topic("orders", Literal, "User:*", Read, Deny)],
            alice,
            Read,
            orders,
            false,
        ),
        Case::new(
            "a prefixed deny beats a literal allow",
            vec![topic("orders", Literal, alice, All, Allow), topic("ord", Prefixed, alice, Write, Deny)],
            alice,
            Write,
            orders,
            false,
        ),
        Case::new(
            "a wildcard-resource deny beats a literal allow",
            vec![topic("orders", Literal, alice, Read, Allow), topic("*", Literal, alice, Read, Deny)],
            alice,
            Read,
            orders,
            false,
        ),
        Case::new(
            "deny all denies every operation",
            vec![topic("orders", Literal, alice, Read, Allow), topic("orders", Literal, alice, All, Deny)],
            alice,
            Read,
            orders,
            false,
        ),
        Case::new(
            "deny read does not deny describe, which allow read implies",
            vec![topic("orders", Literal, alice, Read, Allow), topic("orders", Literal, alice, Read, Deny)],
            alice,
            Describe,
            orders,
            true,
        ),
        Case::new(
            "deny for another host does not apply",
            vec![
                topic("orders", Literal, alice, Read, Allow),
                acl(Topic, "orders", Literal, alice, "10.9.9.9", Read, Deny),
            ],
            alice,
            Read,
            orders,
            true,
        ),
        // Wildcards.
        Case::new(
            "wildcard principal",
            vec![topic("orders", Literal, "User:*", Read, Allow)],
            "User:bob",
            Read,
            orders,
            true,
        ),
        Case::new(
            "only User:* is a wildcard principal",
            vec![topic("orders", Literal, "Group:*", Read, Allow)],
            "User:bob",
            Read,
            orders,
            false,
        ),
        Case::new(
            "a principal of another type is another principal",
            vec![topic("orders", Literal, "Group:alice", Read, Allow)],
            alice,
            Read,
            orders,
            false,
        ),
        Case::new("wildcard host", vec![topic("orders", Literal, alice, Read, Allow)], alice, Read, orders, true)
            .connecting_from("192.168.1.1"),
        Case::new(
            "exact host",
            vec![acl(Topic, "orders", Literal, alice, "10.0.0.1", Read, Allow)],
            alice,
            Read,
            orders,
            true,
        ),
        Case::new(
            "other host",
            vec![acl(Topic, "orders", Literal, alice, "10.0.0.1", Read, Allow)],
            alice,
            Read,
            orders,
            false,
        )
        .connecting_from("10.0.0.2"),
        Case::new("wildcard resource", vec![topic("*", Literal, alice, Read, Allow)], alice, Read, orders, true),
        Case::new(
            "wildcard resource named *",
            vec![topic("*", Literal, alice, Read, Allow)],
            alice,
            Read,
            (Topic, "*"),
            true,
        ),
        Case::new(
            "a prefixed * is a prefix, not a wildcard",
            vec![topic("*", Prefixed, alice, Read, Allow)],
            alice,
            Read,
            orders,
            false,
        ),
        // Prefixed.
        Case::new("prefixed", vec![topic("ord", Prefixed, alice, Read, Allow)], alice, Read, orders, true),
        Case::new(
            "prefixed, whole name",
            vec![topic("orders", Prefixed, alice, Read, Allow)],
            alice,
            Read,
            orders,
            true,
        ),
        Case::new(
            "prefixed, longer than the name",
            vec![topic("orders-eu", Prefixed, alice, Read, Allow)],
            alice,
            Read,
            orders,
            false,
        ),
        Case::new(
            "prefixed, not a prefix",
            vec![topic("pay", Prefixed, alice, Read, Allow)],
            alice,
            Read,
            orders,
            false,
        ),
        Case::new(
            "prefixed, not a prefix, so the default applies",
            vec![topic("pay", Prefixed, alice, Read, Deny)],
            alice,
            Read,
            orders,
            true,
        )
        .allow_everyone_if_no_acl_found(),
        Case::new(
            "prefixed, multibyte",
            vec![topic("zü", Prefixed, alice, Read, Allow)],
            alice,
            Read,
            (Topic, "zürich"),
            true,
        ),
        // Implied operations, for ALLOW only.
        Case::new(
            "read implies describe",
            vec![topic("orders", Literal, alice, Read, Allow)],
            alice,
            Describe,
            orders,
            true,
        ),
        Case::new(
            "write implies describe",
            vec![topic("orders", Literal, alice, Write, Allow)],
            alice,
            Describe,
            orders,
            true,
        ),
        Case::new(
            "delete implies describe",
            vec![topic("orders", Literal, alice, Delete, Allow)],
            alice,
            Describe,
            orders,
            true,
        ),
        Case::new(
            "alter implies describe",
            vec![topic("orders", Literal, alice, Alter, Allow)],
            alice,
            Describe,
            orders,
            true,
        ),
        Case::new(
            "create does not imply describe",
            vec![topic("orders", Literal, alice, Create, Allow)],
            alice,
            Describe,
            orders,
            false,
        ),
        Case::new(
            "describe does not imply read",
            vec![topic("orders", Literal, alice, Describe, Allow)],
            alice,
            Read,
            orders,
            false,
        ),
        Case::new(
            "alter configs implies describe configs",
            vec![topic("orders", Literal, alice, AlterConfigs, Allow)],
            alice,
            DescribeConfigs,
            orders,
            true,
        ),
        Case::new(
            "alter does not imply describe configs",
            vec![topic("orders", Literal, alice, Alter, Allow)],
            alice,
            DescribeConfigs,
            orders,
            false,
        ),
        Case::new(
            "all allows everything",
            vec![topic("orders", Literal, alice, All, Allow)],
            alice,
            AlterConfigs,
            orders,
            true,
        ),
        Case::new(
            "deny write does not deny describe",
            vec![topic("orders", Literal, alice, Describe, Allow), topic("orders", Literal, alice, Write, Deny)],
            alice,
            Describe,
            orders,
            true,
        ),
        // Super users.
        Case::new("super user with no acls", vec![], "User:admin", Alter, orders, true).super_users(&["User:admin"]),
        Case::new(
            "super user despite a deny",
            vec![topic("orders", Literal, "User:admin", All, Deny)],
            "User:admin",
            Read,
            orders,
            true,
        )
        .super_users(&["User:admin"]),
        Case::new(
            "super users are exact principals",
            vec![topic("orders", Literal, "User:admin", All, Deny)],
            "User:admin2",
            Read,
            orders,
            false,
        )
        .super_users(&["User:admin"]),
        // The cluster resource.
        Case::new(
            "cluster action on the cluster",
            vec![acl(Cluster, CLUSTER_NAME, Literal, "User:broker", "*", ClusterAction, Allow)],
            "User:broker",
            ClusterAction,
            (Cluster, CLUSTER_NAME),
            true,
        ),
        Case::new(
            "idempotent write is not cluster action",
            vec![acl(Cluster, CLUSTER_NAME, Literal, "User:broker", "*", ClusterAction, Allow)],
            "User:broker",
            IdempotentWrite,
            (Cluster, CLUSTER_NAME),
            false,
        ),
        Case::new(
            "alter configs implies describe configs on the cluster",
            vec![acl(Cluster, CLUSTER_NAME, Literal, alice, "*", AlterConfigs, Allow)],
            alice,
            DescribeConfigs,
            (Cluster, CLUSTER_NAME),
            true,
        ),
        Case::new(
            "cluster acls do not apply to topics",
            vec![acl(Cluster, CLUSTER_NAME, Literal, alice, "*", All, Allow)],
            alice,
            Read,
            orders,
            false,
        ),
    ]
}

#[test]
fn authorize_follows_standard_authorizer() {
    for case in cases() {
        let authorizer = case.authorizer();
        let principal = KafkaPrincipal::parse(case.principal).unwrap();
        let (resource_type, resource_name) = case.resource;
        let allowed = authorizer.authorize(&principal, case.host, case.operation, resource_type, resource_name);
        assert_eq!(allowed, case.allowed, "{}", case.name);
        let reference = reference_authorize(
            &case.acls,
            &authorizer,
            &principal,
            case.host,
            case.operation,
            resource_type,
            resource_name,
        );
        assert_eq!(reference, case.allowed, "reference disagrees with the table: {}", case.name);
    }
}

#[test]
fn the_set_holds_each_binding_once_and_forgets_removed_ones() {
    let mut set = AclSet::new();
    let read = topic("orders", Literal, "User:alice", Read, Allow);
    let prefixed = topic("ord", Prefixed, "User:alice", Read, Allow);
    assert!(set.insert(&read));
    assert!(!set.insert(&read));
    assert!(set.insert(&prefixed));
    assert_eq!(set.len(), 2);
    assert_eq!(set.iter().collect::<Vec<_>>(), vec![read.clone(), prefixed.clone()]);
    assert!(set.remove(&prefixed));
    assert!(!set.remove(&prefixed));
    assert!(!set.remove(&topic("orders", Literal, "User:bob", Read, Allow)));
    assert_eq!(set.len(), 1);
    assert!(set.remove(&read));
    assert!(set.is_empty());
    assert_eq!(set, AclSet::new(), "removing everything leaves no empty index behind");
    let authorizer = Authorizer { acls: set, ..Authorizer::new(vec![], true) };
    assert!(authorizer.authorize(&KafkaPrincipal::user("bob"), "h", Read, Topic, "orders"));
}

#[test]
fn matching_selects_with_the_filter() {
    let mut set = AclSet::new();
    let bindings = [
        topic("orders", Literal, "User:alice", Read, Allow),
        topic("ord", Prefixed, "User:bob", Write, Deny),
        acl(Group, "orders", Literal, "User:alice", "*", Read, Allow),
    ];
    for binding in &bindings {
        set.insert(binding);
    }
    let filter = AclBindingFilter {
        resource_type: Topic,
        resource_name: Some("orders".to_owned()),
        pattern_type: PatternType::Match,
        ..AclBindingFilter::any()
    };
    assert_eq!(set.matching(&filter), vec![bindings[0].clone(), bindings[1].clone()]);
    assert_eq!(set.matching(&AclBindingFilter::any()).len(), 3);
}

#[test]
#[should_panic(expected = "only LITERAL and PREFIXED")]
fn storing_a_match_pattern_is_a_bug() {
    AclSet::new().insert(&topic("orders", PatternType::Match, "User:alice", Read, Allow));
}

#[test]
fn parses_super_users_as_kafka() {
    let parsed = Authorizer::parse_super_users(" User:admin;User:broker ;; Group:ops:eu").unwrap();
    let expected =
        vec![KafkaPrincipal::user("admin"), KafkaPrincipal::user("broker"), KafkaPrincipal::new("Group", "ops:eu")];
    assert_eq!(parsed, expected);
    assert_eq!(Authorizer::parse_super_users("").unwrap(), vec![]);
    assert_eq!(Authorizer::parse_super_users("User:admin;admin").unwrap_err().input, "admin");
}

#[test]
fn acl_hosts_are_written_as_java_writes_them() {
    let cases = [
        ("10.0.0.1", "10.0.0.1"),
        ("::1", "0:0:0:0:0:0:0:1"),
        ("fe80::1:abcd", "fe80:0:0:0:0:0:1:abcd"),
        ("2001:db8::ff00:42:8329", "2001:db8:0:0:0:ff00:42:8329"),
        ("::ffff:192.168.1.7", "192.168.1.7"),
    ];
    for (address, expected) in cases {
        assert_eq!(acl_host(address.parse().unwrap()), expected, "{address}");
    }
}

#[test]
fn thousands_of_acls_on_other_resources_do_not_change_the_answer() {
    let mut authorizer = Authorizer::new(vec![], false);
    for index in 0..3000 {
        authorizer.acls.insert(&topic(&format!("team-{index}-"), Prefixed, "User:alice", Read, Allow));
        authorizer.acls.insert(&topic(&format!("topic-{index}"), Literal, "User:alice", Write, Allow));
    }
    let alice = KafkaPrincipal::user("alice");
    assert!(authorizer.authorize(&alice, "h", Read, Topic, "team-42-orders"));
    assert!(authorizer.authorize(&alice, "h", Describe, Topic, "team-2999-x"));
    assert!(!authorizer.authorize(&alice, "h", Read, Topic, "team-3000-orders"));
    assert!(authorizer.authorize(&alice, "h", Write, Topic, "topic-7"));
    assert!(!authorizer.authorize(&alice, "h", Write, Topic, "topic-7x"));
    assert_eq!(authorizer.acls.len(), 6000);
}

/// A reference authorizer written from Kafka's description rather than from the index:
/// scan every ACL.
fn reference_authorize(
    acls: &[AclBinding],
    authorizer: &Authorizer,
    principal: &KafkaPrincipal,
    host: &str,
    operation: AclOperation,
    resource_type: ResourceType,
    resource_name: &str,
) -> bool {
    if authorizer.super_users.contains(principal) {
        return true;
    }
    let applies_to_resource = |acl: &&AclBinding| {
        acl.resource_type == resource_type
            && match acl.pattern_type {
                Literal => acl.resource_name == resource_name || acl.resource_name == "*",
                Prefixed => resource_name.starts_with(&acl.resource_name),
                _ => unreachable!("validated"),
            }
    };
    let on_resource: Vec<&AclBinding> = acls.iter().filter(applies_to_resource).collect();
    if on_resource.is_empty() {
        return authorizer.allow_everyone_if_no_acl_found;
    }
    let principal = principal.to_string();
    let applies_to_caller = |acl: &AclBinding| {
        (acl.principal == principal || acl.principal == "User:*") && (acl.host == host || acl.host == "*")
    };
    let denied = on_resource.iter().any(|acl| {
        applies_to_caller(acl) && acl.permission == Deny && (acl.operation == operation || acl.operation == All)
    });
    if denied {
        return false;
    }
    on_resource.iter().any(|acl| {
        applies_to_caller(acl)
            && acl.permission == Allow
            && (acl.operation == operation
                || acl.operation == All
                || (operation == Describe && [Read, Write, Delete, Alter].contains(&acl.operation))
                || (operation == DescribeConfigs && acl.operation == AlterConfigs))
    })
}

mod property {
    use super::*;
    use proptest::prelude::*;

    const NAMES: &[&str] = &["a", "ab", "abc", "abd", "b", "ba", "*", "ä", "äb", "kafka-cluster"];
    const PRINCIPALS: &[&str] = &["User:alice", "User:bob", "User:*", "Group:alice"];
    const HOSTS: &[&str] = &["*", "h1", "h2"];

    /// Any concrete operation, weighted towards those with implication rules so that the
    /// interesting interactions (an ALLOW implying DESCRIBE beside a DENY) come up often.
    fn operation() -> impl Strategy<Value = AclOperation> {
        prop_oneof![
            3 => prop::sample::select(vec![All, Read, Write, Delete, Alter, Describe, AlterConfigs, DescribeConfigs]),
            1 => (2i8..=14).prop_map(AclOperation::from_i8),
        ]
    }

    fn resource_type() -> impl Strategy<Value = ResourceType> {
        prop_oneof![3 => Just(Topic), 1 => Just(Group), 1 => Just(Cluster)]
    }

    fn binding() -> impl Strategy<Value = AclBinding> {
        (
            resource_type(),
            prop::sample::select(NAMES),
            prop::sample::select(vec![Literal, Prefixed]),
            prop::sample::select(PRINCIPALS),
            prop::sample::select(HOSTS),
            operation(),
            prop::sample::select(vec![Allow, Deny]),
        )
            .prop_map(|(resource_type, name, pattern_type, principal, host, operation, permission)| {
                acl(resource_type, name, pattern_type, principal, host, operation, permission)
            })
    }

    proptest! {
        /// The indexed authorizer answers as a linear scan of every ACL does, after any
        /// sequence of inserts and removals.
        #[test]
        fn authorize_equals_a_linear_scan(
            inserted in prop::collection::vec(binding(), 0..40),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            super_user in prop::option::of(prop::sample::select(PRINCIPALS)),
            allow_everyone_if_no_acl_found in any::<bool>(),
            queries in prop::collection::vec(
                (prop::sample::select(&["User:alice", "User:bob", "Group:alice"][..]),
                 prop::sample::select(&["h1", "h2"][..]),
                 operation(),
                 resource_type(),
                 prop::sample::select(&["a", "ab", "abc", "abcd", "b", "bab", "*", "äbc", "kafka-cluster", "x"][..])),
                1..40),
        ) {
            let super_users = super_user.map(|user| KafkaPrincipal::parse(user).unwrap()).into_iter().collect();
            let mut authorizer = Authorizer::new(super_users, allow_everyone_if_no_acl_found);
            let mut reference: Vec<AclBinding> = Vec::new();
            for binding in &inserted {
                let new = !reference.contains(binding);
                prop_assert_eq!(authorizer.acls.insert(binding), new);
                if new {
                    reference.push(binding.clone());
                }
            }
            for index in removed {
                if reference.is_empty() {
                    break;
                }
                let binding = reference.remove(index.index(reference.len()));
                prop_assert!(authorizer.acls.remove(&binding));
            }
            prop_assert_eq!(authorizer.acls.len(), reference.len());
            let mut sorted = reference.clone();
            sorted.sort_by(|a, b| {
                (a.resource_type, a.pattern_type, &a.resource_name, &a.principal, &a.host, a.operation, a.permission)
                    .cmp(&(b.resource_type, b.pattern_type, &b.resource_name, &b.principal, &b.host, b.operation, b.permission))
            });
            prop_assert_eq!(authorizer.acls.iter().collect::<Vec<_>>(), sorted);
            for (principal, host, operation, resource_type, resource_name) in queries {
                let principal = KafkaPrincipal::parse(principal).unwrap();
                let expected = reference_authorize(&reference, &authorizer, &principal, host, operation, resource_type, resource_name);
                let actual = authorizer.authorize(&principal, host, operation, resource_type, resource_name);
                prop_assert_eq!(actual, expected, "{} {} {} {}:{}", principal, host, operation, resource_type, resource_name);
            }
        }
    }
}
