package redisstate

import (
	"strings"
	"testing"
)

// Keys of one organization share one hash tag, and no name can open or
// close a tag early.
func TestKeysShareOneTagPerOrganization(t *testing.T) {
	k := keys{prefix: "cc_relay", pool: "p{1}"}
	for _, org := range []string{"cfg:a", "id:org-1", "key:x}y{z", "%7D"} {
		tag := k.orgTag(org)
		if strings.Count(tag, "{") != 1 || strings.Count(tag, "}") != 1 || !strings.HasSuffix(tag, "}") {
			t.Fatalf("tag %q of %q", tag, org)
		}
		for _, key := range []string{k.org(org), k.budget(org, "son}net")} {
			if !strings.HasPrefix(key, tag) || strings.Count(key, "{") != 1 || strings.Count(key, "}") != 1 {
				t.Fatalf("key %q outside tag %q", key, tag)
			}
		}
	}
	if k.orgTag("a}") == k.orgTag("a%7D") {
		t.Fatal("escaping collides")
	}
	if k.pin(255) != "cc_relay:p%7B1%7D:pin:ff" {
		t.Fatalf("pin key %q", k.pin(255))
	}
}
