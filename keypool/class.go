package keypool

import (
	"path"
	"strings"
)

// maxFamilyClasses bounds the model classes derived from model names: a
// client sending a flood of made-up names must not grow the per-class
// budgets and estimators without end. Names of a new family beyond the
// cap share the "default" class. Classes named by model_class rules are
// bounded by the configuration and do not count.
const maxFamilyClasses = 32

// classify maps a model name to its class: configured rules first, then
// the model family, because the upstream keeps separate limits per family.
// derived reports that the class came from the name, not from a rule.
func (p *Pool) classify(model string) (class string, derived bool) {
	for _, r := range p.cfg.ModelClasses {
		if ok, _ := path.Match(r.Pattern, model); ok {
			return r.Class, false
		}
	}
	return ModelFamily(model), true
}

// ModelFamily returns the family word of a Claude model name: "sonnet" for
// claude-sonnet-4-5-20250929 (claude-<family>-<version>) and for
// claude-3-7-sonnet-20250219 (the older claude-<version>-<family>),
// "fable" for claude-fable-5, "mythos" for claude-mythos-preview. Provider
// spellings such as anthropic.claude-3-5-sonnet-20241022-v2:0 or
// claude-3-opus@20240229 work too. A name without "claude-" that mentions
// opus, sonnet or haiku gets that family (as before families were
// derived); anything else is "default".
func ModelFamily(model string) string {
	if len(model) > 256 {
		model = model[:256] // a family word sits near the start
	}
	m := strings.ToLower(model)
	if i := strings.Index(m, "claude-"); i >= 0 {
		for rest := m[i+len("claude-"):]; rest != ""; {
			var w string
			w, rest, _ = strings.Cut(rest, "-")
			if j := strings.IndexAny(w, "@:."); j >= 0 {
				w = w[:j] // a version or provider suffix
			}
			if isFamilyWord(w) {
				return w
			}
		}
		return "default"
	}
	for _, f := range [...]string{"opus", "sonnet", "haiku"} {
		if strings.Contains(m, f) {
			return f
		}
	}
	return "default"
}

// isFamilyWord reports whether w can name a model family: a short word of
// letters that is not one of the words model names use for versions.
func isFamilyWord(w string) bool {
	if len(w) < 2 || len(w) > 24 {
		return false
	}
	for i := 0; i < len(w); i++ {
		if w[i] < 'a' || w[i] > 'z' {
			return false
		}
	}
	switch w {
	case "latest", "preview", "beta", "v", "default":
		return false
	}
	return true
}

// classIndex returns the index of the named class, adding it if new.
func (st *State) classIndex(name string) int {
	if i, ok := st.classes[name]; ok {
		return i
	}
	i := len(st.cnames)
	st.classes[name] = i
	st.cnames = append(st.cnames, name)
	st.est = append(st.est, estimator{})
	return i
}

// familyIndex is classIndex for a class derived from a model name: once
// maxFamilyClasses of them exist, a new one is "default".
func (st *State) familyIndex(name string) int {
	if i, ok := st.classes[name]; ok {
		return i
	}
	if name != "default" {
		if st.derived >= maxFamilyClasses {
			return st.classIndex("default")
		}
		st.derived++
	}
	return st.classIndex(name)
}

// classIndexOf is the class index of a model name (st.mu held).
func (p *Pool) classIndexOf(model string) int {
	c, derived := p.classify(model)
	if derived {
		return p.st.familyIndex(c)
	}
	return p.st.classIndex(c)
}

// classOf is classIndexOf, remembering the last model: a relay sees few
// model names, and classify scans the name. st.mu is held.
func (p *Pool) classOf(model string) int {
	if p.lastOK && model == p.lastModel {
		return p.lastClass
	}
	c := p.classIndexOf(model)
	p.lastModel, p.lastClass, p.lastOK = model, c, true
	return c
}
