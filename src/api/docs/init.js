// Starts Swagger UI on the description this server serves. Kept out of the
// page so the page's Content-Security-Policy can forbid inline scripts.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // "Try it out" is open at once: the page exists to try the routes.
    tryItOutEnabled: true,
    // No badge from the public validator: the page asks no other host.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
