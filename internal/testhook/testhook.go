// Package testhook lets crash tests stop a process at a precise point, such
// as between the database commit and the offset commit.
//
// Production code calls Run at named points; nothing happens unless a test
// (or a test's child process) registered a function for that name.
package testhook

import "sync"

var (
	mu    sync.RWMutex
	hooks map[string]func()
)

// Set registers fn to run at the point called name. A nil fn removes it.
func Set(name string, fn func()) {
	mu.Lock()
	defer mu.Unlock()
	if hooks == nil {
		hooks = map[string]func(){}
	}
	if fn == nil {
		delete(hooks, name)
		return
	}
	hooks[name] = fn
}

// Run runs the function registered for name, if any.
func Run(name string) {
	mu.RLock()
	fn := hooks[name]
	mu.RUnlock()
	if fn != nil {
		fn()
	}
}
