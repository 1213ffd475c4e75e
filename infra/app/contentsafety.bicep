// Azure AI Content Safety, for the gateway's optional content-safety stage (GATEWAY_CONTENT_SAFETY):
// Prompt Shields and text analysis before any backend sees a prompt. Entra only (keys off);
// the app's identity has Cognitive Services User on it (rbac.bicep).
param name string
param location string
param tags object
@description('Reachable only through its private endpoint (privateNetworking in main.bicep).')
param privateOnly bool = false

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_238:The account calls no other service (no customer-managed key, no blocklist storage), so it has no identity to give
  name: name
  location: location
  tags: tags
  kind: 'ContentSafety'
  sku: {
    name: 'S0'
  }
  properties: {
    // Entra tokens need the custom subdomain; keys are off.
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateOnly ? 'Deny' : 'Allow'
    }
  }
}

output name string = account.name
output id string = account.id
output endpoint string = account.properties.endpoint
