// Azure AI Content Safety, for the gateway's optional content-safety stage (GATEWAY_CONTENT_SAFETY):
// Prompt Shields and text analysis before any backend sees a prompt. Entra only (keys off);
// the app's identity has Cognitive Services User on it (rbac.bicep).
param name string
param location string
param tags object
@description('Enabled: reachable over the public endpoint (Entra auth only). Disabled: only through a private endpoint (main.bicep: privateNetworking). Private unless main.bicep says otherwise.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'

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
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
    }
  }
}

output name string = account.name
output id string = account.id
output endpoint string = account.properties.endpoint
