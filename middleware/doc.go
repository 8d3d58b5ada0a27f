// Package middleware is an Echo middleware that puts per-client API-key
// authentication in front of LLM endpoints.
//
// Per request it resolves the target client (by default the route
// parameter "client"), asks the store whether that client requires a key,
// lets anonymous callers through when it does not, and otherwise demands
// "Authorization: Bearer TOKEN" where the token is an active, unexpired key
// of that very client. Refusals follow RFC 6750. A store that cannot answer
// yields 503, never anonymous access.
//
// It depends only on the contract in package keystore: any keystore.Store
// will do (in production keystore/cache over keystore/sqlstore, which the
// root package llmauth builds in one call). The smallest use:
//
//	auth := middleware.WithConfig(middleware.Config{Store: store})
//	e.POST("/v1/clients/:client/chat", chat, auth)
//
// Mount it per route: Echo runs group middleware for unserved paths too.
//
// Handlers read the caller with [PrincipalFrom].
package middleware
