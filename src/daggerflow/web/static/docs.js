// Swagger UI on this worker's own contract; a separate file (not inline) so that the page's
// Content-Security-Policy can forbid inline scripts.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Swagger UI would otherwise load a badge from validator.swagger.io: the page makes no
    // request beyond this worker (its CSP would block it anyway).
    validatorUrl: null,
  });
});
