package main

import (
	"log/slog"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// mountMetrics serves reg's metrics on GET /metrics.
func mountMetrics(e *echo.Echo, reg *prometheus.Registry) {
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
}

// newMetricsRouter is the app of the --metrics-addr listener: /metrics
// alone, so that operators can keep metrics off the public port.
func newMetricsRouter(reg *prometheus.Registry, logger *slog.Logger, ipExtractor echo.IPExtractor, accessLog bool) *echo.Echo {
	e := newEcho(logger, ipExtractor, accessLog)
	mountMetrics(e, reg)
	return e
}
