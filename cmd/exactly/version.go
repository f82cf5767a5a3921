package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

// buildVersion is what `exactly version` reports.
type buildVersion struct {
	Version  string `json:"version"`  // of the module: a tag, a pseudo-version, or "(devel)"
	Go       string `json:"go"`       // the Go release that built the binary
	Platform string `json:"platform"` // GOOS/GOARCH
}

// readVersion reads the version the Go toolchain recorded in the binary:
// the tag or pseudo-version `go install ...@version` built, "(devel)" for a
// build from a checkout.
func readVersion() buildVersion {
	v := buildVersion{Version: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Version != "" {
			v.Version = info.Main.Version
		}
		if info.GoVersion != "" {
			v.Go = info.GoVersion
		}
	}
	return v
}

func versionCmd(_ context.Context, e *env, _ *flag.FlagSet) error {
	v := readVersion()
	if e.json {
		return e.printJSON(v)
	}
	_, err := fmt.Fprintf(e.stdout, "exactly %s, built with %s for %s\n", v.Version, v.Go, v.Platform)
	return err
}
