//! Who may see which order: the rule behind every customer route once
//! authentication is on (docs/operations.md#authentication).
//!
//! A request comes from a customer (a verified token named them), from the
//! operator (the operator token), or from anyone (authentication is off).
//! A customer sees only their own orders; the others see every order. A
//! route that acts on one order asks `may_see` and answers an order the
//! caller may not see as if it did not exist (`404`), so a customer cannot
//! even learn that another's order id is taken. Only the owner may change an
//! order (cancel it, say) by the same rule: `may_see` first, then act.

use super::{CustomerId, IdempotencyKey};

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A customer, named by their token's `sub`.
    Customer(CustomerId),
    /// The operator: sees and acts on every order.
    Operator,
    /// Authentication is off: every order is visible to every client.
    Anyone,
}

impl Caller {
    /// Whether the caller may see (and act on) an order placed by `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        match self {
            Caller::Customer(me) => me.as_str() == owner,
            Caller::Operator | Caller::Anyone => true,
        }
    }

    /// The customer the caller is limited to, if any.
    pub fn customer(&self) -> Option<&CustomerId> {
        match self {
            Caller::Customer(me) => Some(me),
            Caller::Operator | Caller::Anyone => None,
        }
    }

    /// The idempotency key as stored: a customer's keys are theirs alone, so
    /// two customers may use the same key for different orders; the
    /// operator and unauthenticated clients share one space, as before.
    pub fn scope(&self, key: IdempotencyKey) -> IdempotencyKey {
        match self {
            Caller::Customer(me) => key.scoped_to(me),
            Caller::Operator | Caller::Anyone => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(name: &str) -> Caller {
        Caller::Customer(CustomerId::parse(name).unwrap())
    }

    #[test]
    fn a_customer_sees_only_their_own_orders() {
        assert!(customer("alice").may_see("alice"));
        assert!(!customer("alice").may_see("bob"));
        assert!(!customer("alice").may_see("Alice"));
        assert!(Caller::Operator.may_see("bob"));
        assert!(Caller::Anyone.may_see("bob"));
    }

    #[test]
    fn customers_keys_do_not_collide_with_each_other_or_the_shared_space() {
        let key = || IdempotencyKey::parse("k-1").unwrap();
        let (alice, bob) = (customer("alice").scope(key()), customer("bob").scope(key()));
        assert_ne!(alice, bob);
        assert_ne!(alice, key());
        assert_eq!(Caller::Anyone.scope(key()), key());
        assert_eq!(Caller::Operator.scope(key()), key());
        // A customer whose name ends like another's key cannot reach it.
        let tricky = customer("alice k").scope(IdempotencyKey::parse("1").unwrap());
        assert_ne!(tricky, customer("alice").scope(IdempotencyKey::parse("k1").unwrap()));
    }
}
