// Command example is the llmauth example server and its admin CLI: an Echo
// app whose LLM routes (/v1/clients/NAME/chat and an OpenAI Chat
// Completions–compatible stub) sit behind the llmauth middleware, and the
// commands that manage clients and their API keys in the same database.
//
//	example clients create support-bot
//	TOKEN=$(example keys create --client support-bot --name ci)
//	example serve --addr 127.0.0.1:8080 &
//	curl -X POST -H "Authorization: Bearer $TOKEN" \
//	    http://127.0.0.1:8080/v1/clients/support-bot/chat -d '{"message":"hi"}'
//
// The database is --database-url, else $DATABASE_URL, else the SQLite file
// llmauth.db in the working directory. "example --help" lists every
// command; exit status 0 is success, 2 bad usage or input, 1 anything else.
//
// The CLI is built on spf13/cobra, one command per file in the shape of
// the GitHub CLI: cmd_*.go each hold a command's options struct, its
// cobra.Command and its run function, callable without a process.
// main.go runs the tree and maps errors to exit codes, cmd_root.go builds
// the tree, cmd_help.go prints help, args.go keeps the command-line habits
// of the Go flag package (-flag, "keys revoke -1"), app.go holds what every
// command shares (streams, database), server.go the serve wiring and
// shutdown, routes.go the HTTP routes, echo.go what every listener shares
// (request log, recovery, the JSON error format of 404s and 405s), and
// metrics_listener.go the --metrics-addr listener.
package main
