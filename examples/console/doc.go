// Package console holds the test that drives the operator console
// (github.com/exactlyhq/exactly/console) in a real headless Chromium, from
// a dead letter written by a poison message to its replay processed once.
// It lives in the examples module: chromedp is a test dependency the
// library's users must not inherit. Debian's chromium package is installed
// by deploy/local/chromium.sh (make test runs it).
package console
