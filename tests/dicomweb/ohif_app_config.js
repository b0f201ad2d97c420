/* OHIF v3 app-config.js for a SIVR render node (docs/conformance.md, "OHIF").
 *
 * `SIVR` is defined above this text by whoever serves the file (tests/dicomweb/ohif_site.py):
 *   { nodeUrl, toplevelUrl, dicomwebRoot }
 *
 * Authentication as SIVR's own viewer does it: the page holds the user's SIVR session token and
 * exchanges it at the toplevel (POST /api/v1/auth/token) for a token whose audience is the render
 * node; that token lives under a minute, so it is renewed once half of its life has passed. The
 * session token arrives in the URL fragment (#sivr_session=..., never sent to the server that
 * serves OHIF), is kept in sessionStorage (per tab, gone when the tab closes) and removed from
 * the address bar at once. OHIF's user authentication service then puts
 * "Authorization: Bearer <node token>" on every DICOMweb request.
 */
const sivrAuthentication = {
  id: 'sivr-authentication',
  async preRegistration({ servicesManager }) {
    const STORAGE_KEY = 'sivr-session';
    // earlier than SIVR's own viewer (0.7): OHIF queues image requests with their headers already
    // set, and a request that waited in its queue must still carry a valid token when it is sent
    const RENEW_FRACTION = 0.5;
    const RETRY_MS = 5000;
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    if (fragment.get('sivr_session')) {
      sessionStorage.setItem(STORAGE_KEY, fragment.get('sivr_session'));
      window.history.replaceState(null, '', window.location.pathname + window.location.search);
    }
    let nodeToken = null;
    const exchange = async () => {
      const session = sessionStorage.getItem(STORAGE_KEY);
      if (!session) {
        return; // not signed in: the node answers 401
      }
      let reply;
      try {
        reply = await fetch(`${SIVR.toplevelUrl}/api/v1/auth/token`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${session}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ audience: SIVR.nodeUrl }),
        });
      } catch (error) {
        console.warn('SIVR token exchange failed, retrying', error);
        setTimeout(exchange, RETRY_MS);
        return;
      }
      if (reply.status === 401) {
        nodeToken = null; // the session is over (logged out, revoked, too old): sign in again
        sessionStorage.removeItem(STORAGE_KEY);
        return;
      }
      if (!reply.ok) {
        setTimeout(exchange, RETRY_MS);
        return;
      }
      const body = await reply.json();
      nodeToken = body.access_token;
      setTimeout(exchange, body.expires_in * RENEW_FRACTION * 1000);
    };
    await exchange();
    servicesManager.services.userAuthenticationService.setServiceImplementation({
      getAuthorizationHeader: () => (nodeToken ? { Authorization: `Bearer ${nodeToken}` } : {}),
    });
  },
};

window.config = {
  name: 'sivr',
  routerBasename: null,
  extensions: [sivrAuthentication],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'sivr',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'sivr',
      configuration: {
        friendlyName: 'SIVR render node',
        name: 'sivr',
        qidoRoot: SIVR.dicomwebRoot,
        wadoRoot: SIVR.dicomwebRoot,
        wadoUriRoot: SIVR.dicomwebRoot,
        qidoSupportsIncludeField: true,
        supportsFuzzyMatching: true,
        // exact PatientID from the list's MRN filter: a physician's QIDO must name the patient
        supportsWildcard: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        enableStudyLazyLoad: true,
        staticWado: false,
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
