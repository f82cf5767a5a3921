package deploy_test

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// unpinned are the image references that are allowed without a digest,
// each with the reason. Every other image must be name[:tag]@sha256:<64 hex>.
//
// The third-party base images are here because their digests were never
// looked up: the machine these files were last edited on reaches no
// container registry, and a digest nobody verified is worse than a tag.
// Pin one by looking its digest up where a registry is reachable,
// writing it after the tag in every file that names the image, and
// deleting its entry below (docs/deploy.md, "Pinning base images"):
//
//	docker buildx imagetools inspect golang:1.26-bookworm   # Digest: sha256:...
var unpinned = map[string]string{
	"golang:1.26-bookworm":                      "build stage of the Dockerfile; digest not looked up yet",
	"gcr.io/distroless/static-debian12:nonroot": "runtime stage of the Dockerfile; digest not looked up yet",
	"postgres:15":                               "docker-compose.yml and overlays/local; digest not looked up yet",
	"apache/kafka:4.1.1":                        "docker-compose.yml and overlays/local; digest not looked up yet",
	"jaegertracing/jaeger:2.17.0":               "docker-compose.yml, the demo's trace viewer; digest not looked up yet",
	// The project's own image: built locally (docker compose build, kind
	// load), or pushed and named per release by an overlay, which should
	// set its digest (docs/deploy.md, "Build the image").
	"exactly-orders":     "built from this repository by docker compose",
	"exactly-orders:dev": "built from this repository for the local overlay",
	"registry.example.com/exactly/exactly-orders:1.0.0": "placeholder of the production template",
}

var digestRef = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$`)

// TestImagePins: every image the Dockerfile, docker-compose.yml and the
// rendered manifests use is pinned by digest, or listed in unpinned with
// its reason; an entry of unpinned that nothing uses any more fails too.
func TestImagePins(t *testing.T) {
	uses := map[string][]string{} // image -> where
	add := func(img, where string) {
		img = strings.Trim(img, `"'`)
		if !slices.Contains(uses[img], where) {
			uses[img] = append(uses[img], where)
		}
	}
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	from := regexp.MustCompile(`(?im)^FROM\s+(?:--platform=\S+\s+)?(\S+)`)
	stages := regexp.MustCompile(`(?im)^FROM\s+.*\s+AS\s+(\S+)\s*$`)
	var stageNames []string
	for _, m := range stages.FindAllStringSubmatch(string(dockerfile), -1) {
		stageNames = append(stageNames, strings.ToLower(m[1]))
	}
	n := 0
	for _, m := range from.FindAllStringSubmatch(string(dockerfile), -1) {
		if !slices.Contains(stageNames, strings.ToLower(m[1])) { // FROM an earlier stage names no image
			add(m[1], "Dockerfile")
			n++
		}
	}
	if n == 0 {
		t.Fatal("no FROM image in the Dockerfile")
	}
	image := regexp.MustCompile(`(?m)^\s*(?:- )?image:\s*(\S+)\s*$`)
	compose, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range image.FindAllStringSubmatch(string(compose), -1) {
		add(m[1], "docker-compose.yml")
	}
	for _, ov := range overlays {
		for _, m := range image.FindAllStringSubmatch(render(t, ov.dir), -1) {
			add(m[1], ov.dir)
		}
	}
	for _, want := range []string{"golang:1.26-bookworm", "postgres:15", "exactly-orders:dev"} {
		if _, ok := uses[want]; !ok && !slices.ContainsFunc(slices.Sorted(maps.Keys(uses)), func(k string) bool { return strings.HasPrefix(k, want+"@") }) {
			t.Errorf("image %s not found: the scan above is broken (found %v)", want, slices.Sorted(maps.Keys(uses)))
		}
	}
	for img, where := range uses {
		if strings.Contains(img, "@") {
			if !digestRef.MatchString(img) {
				t.Errorf("%v: image %q: a digest is sha256: and 64 lowercase hex digits", where, img)
			}
			continue
		}
		if _, ok := unpinned[img]; !ok {
			t.Errorf("%v: image %q is not pinned by digest (name:tag@sha256:...); look the digest up (docs/deploy.md, \"Pinning base images\") or, for a reason, list it in unpinned", where, img)
		}
	}
	for img := range unpinned {
		if _, ok := uses[img]; !ok {
			t.Errorf("unpinned lists %q, which nothing uses any more: delete the entry", img)
		}
	}
}
